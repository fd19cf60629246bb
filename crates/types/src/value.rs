//! JSON <-> `google.protobuf.Value`, for the free-form maps on the wire (VM tags,
//! package traits, metadata). Whole numbers come back as JSON integers, as Triton's
//! JSON wrote them (protobuf numbers are doubles).

use prost_types::value::Kind;
use prost_types::{ListValue, Struct};
use serde_json::{Map, Value};

/// A protobuf `Value` as JSON. A number that is whole (and exact in a double) is an
/// integer; a non-finite one is `null`.
pub fn to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

/// A protobuf `Struct` as a JSON object.
pub fn struct_to_json(s: &Struct) -> Map<String, Value> {
    fields_to_json(&s.fields)
}

/// A map of protobuf `Value`s (a `Struct`'s fields, or a `map<string, Value>` field such
/// as a VM's tags) as a JSON object.
pub fn fields_to_json<'a>(
    fields: impl IntoIterator<Item = (&'a String, &'a prost_types::Value)>,
) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect()
}

/// JSON as a protobuf `Value`.
pub fn from_json(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(from_json).collect(),
        }),
        Value::Object(o) => Kind::StructValue(struct_from_json(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn struct_from_json(m: &Map<String, Value>) -> Struct {
    Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_with_integers_kept() {
        let v = json!({
            "a": 1, "b": -2.5, "c": "x", "d": [true, null, {"e": 9_007_199_254_740_i64}],
            "f": {}, "g": []
        });
        assert_eq!(to_json(&from_json(&v)), v);
        let Value::Object(m) = &v else { unreachable!() };
        assert_eq!(struct_to_json(&struct_from_json(m)), *m);
    }

    #[test]
    fn an_empty_value_and_nan_are_null() {
        assert_eq!(to_json(&prost_types::Value { kind: None }), Value::Null);
        let nan = prost_types::Value {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert_eq!(to_json(&nan), Value::Null);
    }
}
