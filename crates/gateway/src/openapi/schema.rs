//! Messages as JSON Schema by the proto3 JSON mapping: lowerCamel names, 64-bit integers
//! as decimal strings, enums by name, the well-known types in their JSON forms.
//!
//! A message has two forms. As an output it is a shared component (`#/components/schemas/<full
//! name>`): every field the server always emits (scalars, lists, maps) is required, and
//! OUTPUT_ONLY fields are `readOnly`. As an input it is written out under its request, because
//! what a field may hold depends on the request: the server's rules for that request apply,
//! REQUIRED fields are required (but inside the resource of a partial update, one with an
//! `update_mask`), and unknown fields are refused as the server refuses them.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::{
    comments::Comments,
    rules::{Constraint, Rules, decimal_range},
};

/// Where the components live.
pub(super) const COMPONENTS: &str = "#/components/schemas/";

/// `google.api.field_behavior` values the document shows (google/api/field_behavior.proto).
const REQUIRED: i32 = 2;
const OUTPUT_ONLY: i32 = 3;
const INPUT_ONLY: i32 = 4;
const IMMUTABLE: i32 = 5;

/// The schemas of one document: the components made so far, and what makes them.
pub(super) struct Schemas<'a> {
    comments: &'a Comments,
    rules: &'a Rules,
    behavior: Option<ExtensionDescriptor>,
    pub(super) components: BTreeMap<String, Value>,
}

/// The request an input belongs to, and the fields its path binds (they are not in the body).
pub(super) struct Input<'r> {
    request: &'r MessageDescriptor,
    partial: bool,
    bound: &'r [String],
}

impl<'r> Input<'r> {
    pub(super) fn new(request: &'r MessageDescriptor, bound: &'r [String]) -> Self {
        Self { request, partial: request.get_field_by_name("update_mask").is_some(), bound }
    }
}

impl<'a> Schemas<'a> {
    pub(super) fn new(pool: &DescriptorPool, comments: &'a Comments, rules: &'a Rules) -> Self {
        Self {
            comments,
            rules,
            behavior: pool.get_extension_by_name("google.api.field_behavior"),
            components: BTreeMap::new(),
        }
    }

    /// A `$ref` to the output form of `message`, made (with what it refers to) on first use.
    pub(super) fn output(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(known) = well_known(message.full_name()) {
            return known;
        }
        let name = message.full_name().to_owned();
        if !self.components.contains_key(&name) {
            // Reserved first, so that a message holding itself refers to its own component.
            self.components.insert(name.clone(), json!({}));
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in message.fields() {
                let mut schema = self.container(&field, |schemas, field| schemas.output_value(field));
                self.annotate(&field, &mut schema, true);
                if !field.supports_presence() {
                    required.push(field.json_name().to_owned());
                }
                properties.insert(field.json_name().to_owned(), Value::Object(schema));
            }
            let mut schema = json!({"type": "object", "properties": properties, "required": required});
            self.describe(message, &mut schema);
            oneofs(message, &mut schema);
            self.components.insert(name.clone(), schema);
        }
        json!({"$ref": format!("{COMPONENTS}{name}")})
    }

    /// The input form of `message` reached at `path` of the request (empty for the request itself).
    pub(super) fn input(&mut self, input: &Input<'_>, message: &MessageDescriptor, path: &str) -> Value {
        if let Some(known) = well_known(message.full_name()) {
            return known;
        }
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let at = if path.is_empty() { field.name().to_owned() } else { format!("{path}.{}", field.name()) };
            if input.bound.contains(&at) {
                continue;
            }
            let mut schema = self.input_field(input, &field, &at);
            if self.needed(input, &field, &at) {
                required.push(field.json_name().to_owned());
                Constraint::Required.apply(&mut schema);
            } else {
                nullable(&mut schema);
            }
            properties.insert(field.json_name().to_owned(), Value::Object(schema));
        }
        let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        self.describe(message, &mut schema);
        oneofs(message, &mut schema);
        schema
    }

    /// The input schema of `field`, at `path` of the request, with its rules.
    pub(super) fn input_field(&mut self, input: &Input<'_>, field: &FieldDescriptor, path: &str) -> Map<String, Value> {
        let mut schema = self.container(field, |schemas, field| schemas.input_value(input, field, path));
        for constraint in self.constraints(input, field, path) {
            let container = field.is_list() || field.is_map();
            let target = if container && !constraint.on_container() {
                let inner = if field.is_list() { "items" } else { "additionalProperties" };
                schema.get_mut(inner).and_then(Value::as_object_mut)
            } else {
                Some(&mut schema)
            };
            if let Some(target) = target {
                constraint.apply(target);
            }
        }
        if let Kind::Enum(values) = field.kind() {
            numbered(&values, &mut schema);
        }
        self.annotate(field, &mut schema, false);
        schema
    }

    /// Whether the request must give the field at `path`: REQUIRED (but a field of the
    /// resource of a partial update, which the mask may leave out; a field of a list entry
    /// in it stays required), or required by a rule of the server's.
    pub(super) fn needed(&self, input: &Input<'_>, field: &FieldDescriptor, path: &str) -> bool {
        (self.has_behavior(field, REQUIRED) && !(input.partial && path.matches('.').count() == 1))
            || self.constraints(input, field, path).contains(&Constraint::Required)
    }

    /// Whether the field's `google.api.field_behavior` holds `behavior`.
    fn has_behavior(&self, field: &FieldDescriptor, behavior: i32) -> bool {
        let Some(extension) = &self.behavior else { return false };
        let options = field.options();
        if !options.has_extension(extension) {
            return false;
        }
        options
            .get_extension(extension)
            .as_list()
            .is_some_and(|values| values.iter().any(|value| value.as_enum_number() == Some(behavior)))
    }

    /// The rules of the request at `path`, then those of the field's own message.
    fn constraints(&self, input: &Input<'_>, field: &FieldDescriptor, path: &str) -> Vec<Constraint> {
        let mut constraints = self.rules.on(input.request.full_name(), path).to_vec();
        constraints.extend_from_slice(self.rules.on(field.parent_message().full_name(), field.name()));
        constraints
    }

    /// A list's or map's schema around its values', or the value's alone.
    fn container(
        &mut self,
        field: &FieldDescriptor,
        value: impl FnOnce(&mut Self, &FieldDescriptor) -> Value,
    ) -> Map<String, Value> {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else { return Map::new() };
            let value_field = entry.map_entry_value_field();
            let mut schema = json!({"type": "object", "additionalProperties": value(self, &value_field)});
            if !matches!(entry.map_entry_key_field().kind(), Kind::String) {
                schema["propertyNames"] = json!({"pattern": "^-?[0-9]+$"});
            }
            into_map(schema)
        } else if field.is_list() {
            into_map(json!({"type": "array", "items": value(self, field)}))
        } else {
            into_map(value(self, field))
        }
    }

    fn output_value(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Message(message) => self.output(&message),
            Kind::Enum(values) => {
                let name = values.full_name().to_owned();
                if !self.components.contains_key(&name) {
                    let names: Vec<String> = values.values().map(|value| value.name().to_owned()).collect();
                    let lines: Vec<String> = values
                        .values()
                        .map(|value| {
                            let comment =
                                self.comments.of(value.parent_file().name(), value.path()).unwrap_or_default();
                            format!("- `{}`: {}", value.name(), comment.replace('\n', " "))
                        })
                        .collect();
                    let intro =
                        self.comments.of(values.parent_file().name(), values.path()).unwrap_or_default().to_owned();
                    let description = format!("{intro}\n\n{}", lines.join("\n")).trim().to_owned();
                    self.components
                        .insert(name.clone(), json!({"type": "string", "enum": names, "description": description}));
                }
                json!({"$ref": format!("{COMPONENTS}{name}")})
            }
            kind @ (Kind::Double
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
            | Kind::Bool
            | Kind::String
            | Kind::Bytes) => scalar(&kind, false),
        }
    }

    fn input_value(&mut self, input: &Input<'_>, field: &FieldDescriptor, path: &str) -> Value {
        match field.kind() {
            Kind::Message(message) => self.input(input, &message, path),
            Kind::Enum(values) => {
                json!({"type": "string", "enum": values.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
            }
            kind @ (Kind::Double
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
            | Kind::Bool
            | Kind::String
            | Kind::Bytes) => scalar(&kind, true),
        }
    }

    /// The field's description and its behaviours as JSON Schema annotations.
    fn annotate(&self, field: &FieldDescriptor, schema: &mut Map<String, Value>, output: bool) {
        let mut description = self.comments.of(field.parent_file().name(), field.path()).unwrap_or_default().to_owned();
        if self.has_behavior(field, IMMUTABLE) {
            description.push_str("\n\nImmutable: set when the resource is created, never changed.");
        }
        // A `$ref` takes no siblings in every tool; the annotations go around it.
        if schema.contains_key("$ref") {
            let inner = std::mem::take(schema);
            schema.insert("allOf".into(), json!([Value::Object(inner)]));
        }
        if !description.trim().is_empty() {
            schema.insert("description".into(), description.trim().into());
        }
        if self.has_behavior(field, OUTPUT_ONLY) {
            schema.insert("readOnly".into(), true.into());
        }
        if self.has_behavior(field, INPUT_ONLY) && !output {
            schema.insert("writeOnly".into(), true.into());
        }
        if field.field_descriptor_proto().options.as_ref().is_some_and(|o| o.deprecated()) {
            schema.insert("deprecated".into(), true.into());
        }
    }

    fn describe(&self, message: &MessageDescriptor, schema: &mut Value) {
        if let Some(comment) = self.comments.of(message.parent_file().name(), message.path()) {
            schema["description"] = comment.into();
        }
    }
}

/// A `oneof`'s members exclude each other (proto3 `optional`'s synthetic oneofs are
/// presence, not a choice).
fn oneofs(message: &MessageDescriptor, schema: &mut Value) {
    let mut exclusions = Vec::new();
    for oneof in message.oneofs().filter(|oneof| !oneof.is_synthetic()) {
        let names: Vec<String> = oneof.fields().map(|field| field.json_name().to_owned()).collect();
        for (at, first) in names.iter().enumerate() {
            for second in &names[at + 1..] {
                exclusions.push(json!({"not": {"required": [first, second]}}));
            }
        }
    }
    if !exclusions.is_empty() {
        schema["allOf"] = json!(exclusions);
    }
}

/// The JSON form of a well-known type, or `None` for any other message.
pub(super) fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "Seconds with up to 9 fractional digits and an `s`, e.g. `1.5s`."}),
        "google.protobuf.FieldMask" => json!({"type": "string",
            "description": "Field paths in lowerCamelCase, separated by commas."}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Any" => json!({"type": "object", "required": ["@type"],
            "properties": {"@type": {"type": "string"}}}),
        "google.protobuf.BoolValue" => json!({"type": ["boolean", "null"]}),
        "google.protobuf.StringValue" => json!({"type": ["string", "null"]}),
        "google.protobuf.BytesValue" => json!({"type": ["string", "null"], "contentEncoding": "base64"}),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": ["number", "null"]}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": ["integer", "null"]}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": ["string", "null"], "format": "int64"})
        }
        _ => return None,
    })
}

/// A scalar's JSON form. A 64-bit integer is written as a decimal string, and read as one
/// or as a JSON number, as the proto3 JSON mapping reads it.
pub(super) fn scalar(kind: &Kind, input: bool) -> Value {
    match kind {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 if input => json!({
            "type": ["string", "integer"], "format": "int64",
            "pattern": format!("^-?{}$", decimal_range(0, i64::MAX)), "minimum": -i64::MAX, "maximum": i64::MAX}),
        Kind::Uint64 | Kind::Fixed64 if input => json!({
            "type": ["string", "integer"], "format": "int64",
            "pattern": format!("^{}$", decimal_range(0, i64::MAX)), "minimum": 0, "maximum": i64::MAX}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "int64"})
        }
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(_) | Kind::Message(_) => json!({}),
    }
}

/// proto3 JSON reads an enum by its number too: each name allowed brings its number.
fn numbered(values: &prost_reflect::EnumDescriptor, schema: &mut Map<String, Value>) {
    let target = match schema.get_mut("items") {
        Some(Value::Object(items)) => items,
        Some(_) | None => schema,
    };
    let Some(Value::Array(names)) = target.get_mut("enum") else { return };
    let numbers: Vec<Value> = names
        .iter()
        .filter_map(|name| values.get_value_by_name(name.as_str()?))
        .map(|value| value.number().into())
        .collect();
    names.extend(numbers);
    target.insert("type".into(), json!(["string", "integer"]));
}

/// proto3 JSON reads `null` as the field's default, as if it were absent.
fn nullable(schema: &mut Map<String, Value>) {
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(Value::Null);
    }
    match schema.get_mut("type") {
        Some(Value::String(one)) => {
            let one = std::mem::take(one);
            schema.insert("type".into(), json!([one, "null"]));
        }
        Some(Value::Array(types)) => types.push("null".into()),
        Some(_) | None => {}
    }
    // A `null` is no string: the string keywords' alternatives must let it through.
    if let Some(Value::Array(alternatives)) = schema.get_mut("anyOf") {
        alternatives.push(json!({"type": "null"}));
    }
}

fn into_map(value: Value) -> Map<String, Value> {
    if let Value::Object(map) = value { map } else { Map::from_iter([("allOf".to_owned(), json!([value]))]) }
}
