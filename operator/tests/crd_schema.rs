//! The generated CRD schema accepts the shipped examples and rejects bad specs, as the API server
//! would (structural schema; the CEL rules are checked by `MetaStoreSpec::validate` and, for
//! real, by the API server in the end-to-end suite).

use kube::CustomResourceExt;
use metastore_operator::crd::MetaStore;
use serde_json::{json, Value};

fn validator() -> jsonschema::Validator {
    let crd = serde_json::to_value(MetaStore::crd()).unwrap();
    let schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    jsonschema::draft4::new(&schema).expect("schema compiles")
}

fn example(file: &str) -> Value {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let path = format!("{dir}/../deploy/examples/{file}");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn errors(v: &jsonschema::Validator, obj: &Value) -> Vec<String> {
    v.iter_errors(obj).map(|e| e.to_string()).collect()
}

#[test]
fn shipped_examples_are_valid_and_parse() {
    let v = validator();
    for f in ["metastore-1.yaml", "metastore-3.yaml"] {
        let obj = example(f);
        assert!(errors(&v, &obj).is_empty(), "{f}: {:?}", errors(&v, &obj));
        let ms: MetaStore = serde_json::from_value(obj).unwrap();
        assert_eq!(ms.spec.validate(), Ok(()), "{f}");
    }
}

#[test]
fn bad_specs_are_rejected_by_the_schema() {
    let v = validator();
    let cases = [
        (json!({"spec": {}}), "replicas"),
        (json!({"spec": {"replicas": 0}}), "minimum"),
        (json!({"spec": {"replicas": 10}}), "maximum"),
        (json!({"spec": {"replicas": "three"}}), "integer"),
        (
            json!({"spec": {"replicas": 3, "leaseRead": {"maxClockDrift": 0.9}}}),
            "maximum",
        ),
        (
            json!({"spec": {"replicas": 3, "heartbeatIntervalMs": 1}}),
            "minimum",
        ),
        (
            json!({"spec": {"replicas": 3, "storage": {"retentionOnDelete": "Shred"}}}),
            "Shred",
        ),
        (json!({"spec": {"replicas": 3, "paused": "yes"}}), "boolean"),
    ];
    for (obj, want) in cases {
        let errs = errors(&v, &obj);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{obj}: expected an error mentioning {want:?}, got {errs:?}"
        );
    }
}
