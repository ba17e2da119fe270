//! Prints the MetaStore CustomResourceDefinition as YAML (`make crds` writes it to `crds/`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", metastore_operator::crd_yaml()?);
    Ok(())
}
