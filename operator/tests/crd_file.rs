//! The checked-in CRD (`crds/`) must be exactly what the code generates: run `make crds` after
//! changing the types.

#[test]
fn checked_in_crd_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/metastore.io_metastores.yaml"
    );
    let on_disk = std::fs::read_to_string(path).expect("crds/metastore.io_metastores.yaml");
    let generated = metastore_operator::crd_yaml().expect("generate");
    assert!(
        on_disk == generated,
        "crds/metastore.io_metastores.yaml is stale: run `make crds`"
    );
}
