//! Decoding a lease value in one pass, the way Go's `encoding/json` fills upstream's
//! `LeaseAttrs` (docs/flannel.md §4.2): each object key is matched to a field
//! case-insensitively, a later key for the same field overwrites an earlier one, unknown keys
//! are skipped. Only `BackendData` and `BackendV6Data` are kept as JSON values (their backend
//! decodes them); the three text fields are read as they stream by, with no intermediate
//! `serde_json::Value` of the whole object (a node's start decodes every lease in the cluster).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The fields upstream's `LeaseAttrs` has.
enum Field {
    PublicIp,
    PublicIpv6,
    BackendType,
    BackendData,
    BackendV6Data,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                let is = |want: &str| name.eq_ignore_ascii_case(want);
                Ok(if is("PublicIP") {
                    Field::PublicIp
                } else if is("PublicIPv6") {
                    Field::PublicIpv6
                } else if is("BackendType") {
                    Field::BackendType
                } else if is("BackendData") {
                    Field::BackendData
                } else if is("BackendV6Data") {
                    Field::BackendV6Data
                } else {
                    Field::Other
                })
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// A field upstream declares as a string: what the JSON held there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Text {
    /// `null`, or the key is absent.
    #[default]
    Null,
    Str(String),
    /// A number, boolean, array or object.
    NotAString,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text::Str(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text, E> {
                Ok(Text::Str(s))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
                Ok(Text::NotAString)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text::NotAString)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text::NotAString)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
                Ok(Text::NotAString)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text::NotAString)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text::NotAString)
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// A lease value's fields as the JSON held them.
#[derive(Debug, Default)]
pub struct Wire {
    pub public_ip: Text,
    pub public_ipv6: Text,
    pub backend_type: Text,
    /// `None` when absent or `null`.
    pub backend_data: Option<Value>,
    pub backend_v6_data: Option<Value>,
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Wire, D::Error> {
        struct WireVisitor;
        impl<'de> Visitor<'de> for WireVisitor {
            type Value = Wire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
                let mut w = Wire::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let raw = |v: Value| Some(v).filter(|v| !v.is_null());
                    match field {
                        Field::PublicIp => w.public_ip = map.next_value()?,
                        Field::PublicIpv6 => w.public_ipv6 = map.next_value()?,
                        Field::BackendType => w.backend_type = map.next_value()?,
                        Field::BackendData => w.backend_data = raw(map.next_value()?),
                        Field::BackendV6Data => w.backend_v6_data = raw(map.next_value()?),
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(w)
            }
        }
        d.deserialize_map(WireVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> Wire {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn later_keys_overwrite_earlier_ones_whatever_their_case() {
        // Go's encoding/json assigns every matching key in document order.
        let w = wire(r#"{"PublicIP":"10.0.0.1","publicip":"10.0.0.2","x":[1,{"a":2}]}"#);
        assert_eq!(w.public_ip, Text::Str("10.0.0.2".into()));
        let w = wire(r#"{"publicIP":"10.0.0.2","PublicIP":"10.0.0.1"}"#);
        assert_eq!(w.public_ip, Text::Str("10.0.0.1".into()));
        let w = wire(r#"{"BackendData":{"VNI":1},"backenddata":null}"#);
        assert_eq!(w.backend_data, None);
    }

    #[test]
    fn text_fields_say_what_they_held() {
        let w = wire(r#"{"PublicIP":5,"PublicIPv6":["a"],"BackendType":null,"BackendV6Data":{"VNI":2}}"#);
        assert_eq!(
            (w.public_ip, w.public_ipv6, w.backend_type),
            (Text::NotAString, Text::NotAString, Text::Null)
        );
        assert_eq!(w.backend_v6_data, Some(serde_json::json!({"VNI": 2})));
        let escaped = wire(r#"{"Public\u0049P":"10.0.0.\u0039"}"#);
        assert_eq!(escaped.public_ip, Text::Str("10.0.0.9".into()));
    }

    #[test]
    fn only_an_object_is_a_lease_value() {
        for bad in ["[]", "\"x\"", "3", "null", "garbage", "{\"PublicIP\":}"] {
            assert!(serde_json::from_str::<Wire>(bad).is_err(), "{bad}");
        }
    }
}
