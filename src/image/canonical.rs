//! [`to_canonical_json`]: the one JSON encoding cairn hashes — object keys sorted by their
//! bytes, no insignificant whitespace — independent of serde_json's `preserve_order`
//! feature, which any dependency could switch on.

use serde::Serialize;
use serde_json::Value;

/// Serialises `v` canonically.
pub fn to_canonical_json<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let value = serde_json::to_value(v).expect("cairn's JSON types always serialise");
    let mut out = Vec::new();
    write_value(&value, &mut out);
    out
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    serde_json::to_writer(out, v).expect("writing to a Vec never fails");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_at_every_level_and_drops_whitespace() {
        let v: Value = serde_json::from_str(
            r#"{ "b": 1, "a": { "z": [ {"y": null, "x": "\u00e9\n"} ], "B": true }, "A": 1.5 }"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(to_canonical_json(&v)).unwrap(),
            "{\"A\":1.5,\"a\":{\"B\":true,\"z\":[{\"x\":\"\u{e9}\\n\",\"y\":null}]},\"b\":1}"
        );
    }
}
