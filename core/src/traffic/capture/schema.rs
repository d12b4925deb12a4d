//! gRPC messages decoded with the user's `.proto` files: the method's request and response
//! types from a descriptor pool (which the node compiles from `--proto-path`), and each message
//! as JSON with the fields' names (prost-reflect's proto3 JSON mapping, field names as written
//! in the `.proto`).
//!
//! Decoding happens when a record is viewed, never on the capture path.

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, SerializeOptions};

/// The services and messages the user described.
#[derive(Debug, Clone, Default)]
pub struct Schemas {
    pool: Option<DescriptorPool>,
}

impl Schemas {
    /// Schemas from a compiled pool.
    pub fn new(pool: DescriptorPool) -> Schemas {
        Schemas { pool: Some(pool) }
    }

    /// No schemas: messages are shown as wire fields only.
    pub fn none() -> Schemas {
        Schemas::default()
    }

    /// Services known, by full name.
    pub fn services(&self) -> Vec<String> {
        self.pool
            .iter()
            .flat_map(|p| p.services())
            .map(|s| s.full_name().to_string())
            .collect()
    }

    /// The method `service/method`, if described.
    pub fn method(&self, service: &str, method: &str) -> Option<MethodDescriptor> {
        let s = self.pool.as_ref()?.get_service_by_name(service)?;
        let found = s.methods().find(|m| m.name() == method);
        found
    }

    /// One message of a call as JSON: `None` when the method is not described, an error
    /// sentence when the bytes do not fit its type.
    pub fn decode(
        &self,
        service: &str,
        method: &str,
        request: bool,
        data: &[u8],
    ) -> Option<Result<serde_json::Value, String>> {
        let m = self.method(service, method)?;
        let desc = if request { m.input() } else { m.output() };
        let name = desc.full_name().to_string();
        Some(
            DynamicMessage::decode(desc, data)
                .map_err(|e| format!("not a {name}: {e}"))
                .and_then(|msg| {
                    let opts = SerializeOptions::new()
                        .use_proto_field_name(true)
                        .skip_default_fields(false);
                    msg.serialize_with_options(serde_json::value::Serializer, &opts)
                        .map_err(|e| format!("{name}: {e}"))
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost_types::{
        field_descriptor_proto::{Label, Type},
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        MethodDescriptorProto, ServiceDescriptorProto,
    };

    /// `helloworld.Greeter/SayHello(HelloRequest{name}) -> HelloReply{message}`, built by hand
    /// (the node compiles real `.proto` files with protox).
    pub(crate) fn greeter() -> Schemas {
        let field = |name: &str, n: i32| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(n),
            label: Some(Label::Optional as i32),
            r#type: Some(Type::String as i32),
            ..Default::default()
        };
        let msg = |name: &str, f: FieldDescriptorProto| DescriptorProto {
            name: Some(name.into()),
            field: vec![f],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("helloworld.proto".into()),
            package: Some("helloworld".into()),
            syntax: Some("proto3".into()),
            message_type: vec![
                msg("HelloRequest", field("name", 1)),
                msg("HelloReply", field("message", 1)),
            ],
            service: vec![ServiceDescriptorProto {
                name: Some("Greeter".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("SayHello".into()),
                    input_type: Some(".helloworld.HelloRequest".into()),
                    output_type: Some(".helloworld.HelloReply".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let pool = DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file: vec![file] })
            .expect("pool");
        Schemas::new(pool)
    }

    #[test]
    fn messages_get_field_names_from_the_schema() {
        let s = greeter();
        assert_eq!(s.services(), ["helloworld.Greeter"]);
        let v = s
            .decode("helloworld.Greeter", "SayHello", true, b"\x0a\x05world")
            .unwrap()
            .unwrap();
        assert_eq!(v, serde_json::json!({"name": "world"}));
        let v = s
            .decode("helloworld.Greeter", "SayHello", false, b"\x0a\x02hi")
            .unwrap()
            .unwrap();
        assert_eq!(v["message"], "hi");
        assert!(s.decode("helloworld.Greeter", "Nope", true, b"").is_none());
        assert!(s
            .decode("helloworld.Greeter", "SayHello", true, b"\x0a\x09")
            .unwrap()
            .is_err());
        assert!(Schemas::none().decode("a", "b", true, b"").is_none());
    }
}
