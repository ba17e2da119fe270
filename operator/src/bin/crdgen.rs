//! Prints the MetaStore CustomResourceDefinition as YAML (`make crds` writes it to `crds/`).

use kube::CustomResourceExt;
use metastore_operator::crd::MetaStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", metastore_operator::crd_yaml()?);
    let _ = MetaStore::crd_name();
    Ok(())
}
