//! The checked-in CRD (`crds/`) must be exactly what the code generates: run `make crds` after
//! changing the types.

#[test]
fn checked_in_crd_is_current() {
    // Read at run time: a test binary reused from another checkout (a shared target dir) must
    // not look at that checkout's file.
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let path = format!("{dir}/../crds/metastore.io_metastores.yaml");
    let on_disk = std::fs::read_to_string(&path).expect("crds/metastore.io_metastores.yaml");
    let generated = metastore_operator::crd_yaml().expect("generate");
    assert!(
        on_disk == generated,
        "crds/metastore.io_metastores.yaml is stale: run `make crds`"
    );
}
