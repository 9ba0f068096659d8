//! Between HTTP and the RPC's messages, by the proto3 JSON mapping: the request message
//! from the body, the path variables and the query; the response message as JSON.

use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

use super::rule::{Rule, percent_decode};
use crate::Failure;

/// The JSON answer: the whole response, or the field the rule's `response_body` names.
pub(super) fn response_json(rule: &Rule, response: &DynamicMessage) -> Result<Value, Failure> {
    if rule.response_body.is_empty() {
        return serialize(response);
    }
    let field = rule.output.get_field_by_name(&rule.response_body);
    match field {
        Some(field) => serialize_value(response, &field),
        None => serialize(response),
    }
}

/// In proto3 JSON with unpopulated fields emitted (`"valid": false`, `[]`), as
/// grpc-gateway's default marshaller writes them, so a client sees every field it was promised.
fn serialize(message: &DynamicMessage) -> Result<Value, Failure> {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new().skip_default_fields(false))
        .map_err(|err| Failure::Status(tonic::Status::internal(format!("rendering the response: {err}"))))
}

fn serialize_value(message: &DynamicMessage, field: &FieldDescriptor) -> Result<Value, Failure> {
    match message.get_field(field).as_message() {
        Some(inner) => serialize(inner),
        None => serialize(message),
    }
}

/// The request message from the body, the path variables and the query, in that order of
/// precedence reversed: path variables win over the query, both over the body.
pub(super) fn request_message(
    rule: &Rule,
    variables: &[(String, String)],
    query: &str,
    body: &[u8],
) -> Result<DynamicMessage, Failure> {
    let parsed_body = || -> Result<Value, Failure> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(body).map_err(|err| Failure::BadRequest(format!("invalid JSON body: {err}")))
    };
    let mut json = match rule.body.as_str() {
        "" => Map::new(),
        "*" => {
            let Value::Object(map) = parsed_body()? else {
                return Err(Failure::BadRequest(format!(
                    "the body must be a JSON object ({})",
                    rule.input.full_name()
                )));
            };
            map
        }
        field => {
            let mut map = Map::new();
            map.insert(field.to_owned(), parsed_body()?);
            map
        }
    };
    // With body "*" every field comes from the body; grpc-gateway ignores the query then.
    if rule.body != "*" {
        for (name, value) in form_pairs(query) {
            let field = field_path(&rule.input, &name)?;
            let value = typed(
                field.last().ok_or_else(|| Failure::BadRequest(format!("unknown query parameter {name}")))?,
                &value,
            )?;
            insert(&mut json, &field, value, true)?;
        }
    }
    for (name, value) in variables {
        let field = field_path(&rule.input, name)?;
        let value =
            typed(field.last().ok_or_else(|| Failure::BadRequest(format!("unknown path variable {name}")))?, value)?;
        insert(&mut json, &field, value, false)?;
    }
    DynamicMessage::deserialize_with_options(rule.input.clone(), Value::Object(json), &DeserializeOptions::new())
        .map_err(|err| Failure::BadRequest(format!("invalid {}: {err}", rule.input.full_name())))
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| percent_decode(&text.replace('+', " "));
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The fields a dotted path names, from the message down.
fn field_path(message: &MessageDescriptor, path: &str) -> Result<Vec<FieldDescriptor>, Failure> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| Failure::BadRequest(format!("{} has no field {path}", message.full_name())))?;
        if names.peek().is_some() {
            let Kind::Message(inner) = field.kind() else {
                return Err(Failure::BadRequest(format!("{path} does not name a field of {}", message.full_name())));
            };
            if field.is_list() || field.is_map() {
                return Err(Failure::BadRequest(format!("{path} does not name a field of {}", message.full_name())));
            }
            current = inner;
        }
        fields.push(field);
    }
    Ok(fields)
}

/// A path or query value as the JSON the field's type takes.
fn typed(field: &FieldDescriptor, raw: &str) -> Result<Value, Failure> {
    if field.is_map() {
        return Err(Failure::BadRequest(format!("{} cannot be given in the path or query", field.name())));
    }
    match field.kind() {
        Kind::Bool => match raw {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(Failure::BadRequest(format!("{} must be true or false", field.name()))),
        },
        // An enum by its number, as grpc-gateway reads one from the query.
        Kind::Enum(_) if raw.parse::<i32>().is_ok() => Ok(Value::from(raw.parse::<i32>().unwrap_or_default())),
        // Proto3 JSON takes numbers, enums and well-known types as strings too.
        Kind::Double
        | Kind::Float
        | Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Fixed32
        | Kind::Fixed64
        | Kind::Sfixed32
        | Kind::Sfixed64
        | Kind::String
        | Kind::Bytes
        | Kind::Enum(_)
        | Kind::Message(_) => Ok(Value::String(raw.to_owned())),
    }
}

fn insert(json: &mut Map<String, Value>, path: &[FieldDescriptor], value: Value, append: bool) -> Result<(), Failure> {
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut map = json;
    for parent in parents {
        // A JSON name and a proto name may both be present: use the proto name throughout.
        if let Some(existing) = map.remove(parent.json_name()) {
            map.insert(parent.name().to_owned(), existing);
        }
        let entry = map.entry(parent.name().to_owned()).or_insert_with(|| Value::Object(Map::new()));
        map =
            entry.as_object_mut().ok_or_else(|| Failure::BadRequest(format!("{} must be an object", parent.name())))?;
    }
    map.remove(last.json_name());
    if last.is_list() {
        let entry = map.entry(last.name().to_owned()).or_insert_with(|| Value::Array(vec![]));
        match entry.as_array_mut() {
            Some(items) if append => items.push(value),
            Some(_) | None => *entry = Value::Array(vec![value]),
        }
    } else {
        map.insert(last.name().to_owned(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::native::rules;

    #[test]
    fn requests_merge_body_path_and_query() {
        let rules = rules(&DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET).unwrap());
        let update = rules.iter().find(|r| r.grpc_path.ends_with("/UpdateApiKey")).unwrap();
        let message = request_message(
            update,
            &[("api_key.id".into(), "k1".into())],
            "update_mask=status&request_id=r",
            br#"{"status":"API_KEY_STATUS_INACTIVE","name":"n"}"#,
        )
        .unwrap();
        let json = serialize(&message).unwrap();
        assert_eq!(json["apiKey"]["id"], "k1");
        assert_eq!(json["apiKey"]["status"], "API_KEY_STATUS_INACTIVE");
        assert_eq!(json["updateMask"], "status");
        assert_eq!(json["requestId"], "r");
        let list = rules.iter().find(|r| r.grpc_path.ends_with("/ListApiKeys")).unwrap();
        let message =
            request_message(list, &[], "pageSize=5&show_revoked=true&status=API_KEY_STATUS_ACTIVE", b"").unwrap();
        let json = serialize(&message).unwrap();
        assert_eq!((json["pageSize"].clone(), json["showRevoked"].clone()), (5.into(), true.into()));
        assert!(request_message(list, &[], "page_size=many", b"").is_err());
        assert!(request_message(list, &[], "nope=1", b"").is_err());
        assert!(request_message(list, &[], "status=NOPE", b"").is_err());
    }
}
