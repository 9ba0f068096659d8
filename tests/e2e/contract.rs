//! The proto contract itself: naming and a google.api.http rule on every RPC.

use prost_reflect::{DescriptorPool, Value};

#[test]
fn every_rpc_has_an_http_rule_and_standard_names() {
    let pool = DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let http = pool.get_extension_by_name("google.api.http").expect("google.api.http is in the descriptor set");
    let services: Vec<_> = pool.services().filter(|s| s.package_name() == "keyward.v1").collect();
    assert!(!services.is_empty());
    for service in services {
        assert!(service.name().ends_with("Service"), "{}", service.name());
        for method in service.methods() {
            let options = method.options();
            assert!(options.has_extension(&http), "{} has no google.api.http rule", method.full_name());
            let Value::Message(rule) = options.get_extension(&http).into_owned() else { panic!("rule is a message") };
            let bound = ["get", "post", "patch", "delete", "put"]
                .iter()
                .filter_map(|verb| rule.get_field_by_name(verb))
                .filter_map(|value| value.as_str().map(str::to_owned))
                .find(|path| !path.is_empty())
                .unwrap_or_else(|| panic!("{} binds no path", method.full_name()));
            assert!(bound.starts_with("/v1/"), "{bound}");
            assert_eq!(method.input().name(), format!("{}Request", method.name()));
            assert_eq!(method.output().name(), format!("{}Response", method.name()));
        }
    }
}
