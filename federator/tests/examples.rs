//! The shipped examples stay valid, and the CRD generated from the types stays structural.

use std::path::Path;

#[test]
fn example_checks_all_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/checks");
    let loaded = vigil_federator::loader::load_dir(&dir).unwrap();
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    assert!(loaded.checks.len() >= 4);
}

#[test]
fn crd_is_generated_from_the_types() {
    let crd = vigil_federator::resource::crd_yaml();
    assert!(crd.contains("name: healthchecks.vigil.dev"));
    assert!(crd.contains("- hc"), "short name");
    assert!(
        crd.contains("x-kubernetes-int-or-string: true"),
        "expectStatus accepts 200 and \"2xx\""
    );
    assert!(!crd.contains("$ref"), "structural schema: no references");
}
