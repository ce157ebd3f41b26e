//! The SCIM 2.0 representation of a [`User`] (RFC 7643 §4.1): the documents sent in POST, PUT
//! and PATCH.

use serde_json::Value;

use super::json;
use super::request::Document;
use super::schema::{ENTERPRISE_SCHEMA, USER_SCHEMA};
use crate::user::User;

impl User {
    /// The full SCIM User resource, for POST and PUT (`id` set for PUT).
    pub fn to_document(&self, id: Option<&str>) -> Document {
        Document::from_json_bytes(self.scim_json(id, true))
    }

    /// The user's attributes without `schemas`: the value of a PATCH `replace` operation.
    pub fn attributes_document(&self) -> Document {
        Document::from_json_bytes(self.scim_json(None, false))
    }

    /// The full SCIM User resource as a JSON value (seeding, tests).
    pub fn to_scim(&self) -> Value {
        self.to_document(None).to_value()
    }

    fn scim_json(&self, id: Option<&str>, with_schemas: bool) -> Vec<u8> {
        let enterprise = self.employee_number.is_some() || self.department.is_some();
        // Sized once for the fixed text (schemas, keys) plus the values, so it never regrows
        // unless a value needs escaping.
        let values = [
            &self.user_name,
            &self.email,
            &self.first_name,
            &self.last_name,
        ]
        .iter()
        .map(|v| v.len())
        .chain(
            [
                &self.display_name,
                &self.external_id,
                &self.title,
                &self.department,
                &self.employee_number,
                &self.phone,
            ]
            .iter()
            .map(|v| v.as_ref().map_or(0, String::len)),
        )
        .sum::<usize>();
        let mut out = Vec::with_capacity(448 + id.map_or(0, str::len) + values + values / 8);
        // Written by hand rather than through a derived Serialize: the keys are fixed text,
        // and serde_json escapes every key and value byte by byte (most of the time it took).
        out.push(b'{');
        if with_schemas {
            out.extend_from_slice(br#""schemas":[""#);
            out.extend_from_slice(USER_SCHEMA.as_bytes());
            if enterprise {
                out.extend_from_slice(br#"",""#);
                out.extend_from_slice(ENTERPRISE_SCHEMA.as_bytes());
            }
            out.extend_from_slice(br#""],"#);
        }
        if let Some(id) = id {
            out.extend_from_slice(br#""id":"#);
            json::push_str(&mut out, id);
            out.push(b',');
        }
        out.extend_from_slice(br#""userName":"#);
        json::push_str(&mut out, &self.user_name);
        out.extend_from_slice(br#","name":{"givenName":"#);
        json::push_str(&mut out, &self.first_name);
        out.extend_from_slice(br#","familyName":"#);
        json::push_str(&mut out, &self.last_name);
        out.extend_from_slice(br#"},"emails":[{"value":"#);
        json::push_str(&mut out, &self.email);
        out.extend_from_slice(br#","type":"work","primary":true}],"active":"#);
        out.extend_from_slice(if self.active { b"true" } else { b"false" });
        let optional = |out: &mut Vec<u8>, key: &[u8], value: &Option<String>| {
            if let Some(value) = value {
                out.extend_from_slice(key);
                json::push_str(out, value);
            }
        };
        optional(&mut out, br#","displayName":"#, &self.display_name);
        optional(&mut out, br#","externalId":"#, &self.external_id);
        optional(&mut out, br#","title":"#, &self.title);
        if let Some(phone) = &self.phone {
            out.extend_from_slice(br#","phoneNumbers":[{"value":"#);
            json::push_str(&mut out, phone);
            out.extend_from_slice(br#","type":"work"}]"#);
        }
        if enterprise {
            out.extend_from_slice(br#",""#);
            out.extend_from_slice(ENTERPRISE_SCHEMA.as_bytes());
            out.extend_from_slice(br#"":{"#);
            let mut first = true;
            for (key, value) in [
                (&br#""employeeNumber":"#[..], &self.employee_number),
                (&br#""department":"#[..], &self.department),
            ] {
                if let Some(value) = value {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(key);
                    json::push_str(&mut out, value);
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::sample;

    #[test]
    fn scim_representation_maps_every_field() {
        let mut u = sample("ada@example.com");
        u.department = Some("Ops".into());
        u.employee_number = Some("E1".into());
        u.phone = Some("+1 555".into());
        u.title = Some("Agent".into());
        let v = u.to_scim();
        assert_eq!(v["userName"], "ada@example.com");
        assert_eq!(v["name"]["familyName"], "Lovelace");
        assert_eq!(v["emails"][0]["primary"], true);
        assert_eq!(v["phoneNumbers"][0]["type"], "work");
        assert_eq!(v[ENTERPRISE_SCHEMA]["department"], "Ops");
        assert_eq!(v["schemas"][1], ENTERPRISE_SCHEMA);
        assert!(v.get("displayName").is_none());
    }

    #[test]
    fn documents_for_post_put_and_patch() {
        let mut u = sample("Ada@Example.com");
        u.display_name = Some("Ada \"Countess\" L.".into());
        u.employee_number = Some("E1".into());
        let post = u.to_document(None).to_value();
        assert_eq!(
            post,
            serde_json::json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
                "userName": "Ada@Example.com",
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "emails": [{"value": "Ada@Example.com", "type": "work", "primary": true}],
                "active": true,
                "displayName": "Ada \"Countess\" L.",
                ENTERPRISE_SCHEMA: {"employeeNumber": "E1"},
            })
        );
        let put = u.to_document(Some("id-1")).to_value();
        assert_eq!(put["id"], "id-1");
        let attributes = u.attributes_document().to_value();
        assert!(attributes.get("schemas").is_none(), "{attributes}");
        assert_eq!(attributes["userName"], "Ada@Example.com");
        assert_eq!(
            sample("x@example.com").to_scim()["schemas"],
            serde_json::json!([USER_SCHEMA])
        );
    }

    proptest::proptest! {
        /// The hand-written document is the JSON of every field, whatever the text holds.
        #[test]
        fn document_is_the_json_of_every_field(
            text in proptest::collection::vec(proptest::prelude::any::<String>(), 11),
            present in proptest::prelude::any::<[bool; 6]>(),
            active in proptest::prelude::any::<bool>(),
            with_id in proptest::prelude::any::<bool>(),
        ) {
            let opt = |i: usize| present[i].then(|| text[i + 4].clone());
            let u = User {
                user_name: text[0].clone(),
                email: text[1].clone(),
                first_name: text[2].clone(),
                last_name: text[3].clone(),
                active,
                display_name: opt(0),
                external_id: opt(1),
                title: opt(2),
                department: opt(3),
                employee_number: opt(4),
                phone: opt(5),
            };
            let id = with_id.then_some(text[10].as_str());
            let mut expected = serde_json::json!({
                "userName": u.user_name,
                "name": {"givenName": u.first_name, "familyName": u.last_name},
                "emails": [{"value": u.email, "type": "work", "primary": true}],
                "active": active,
            });
            let mut schemas = vec![USER_SCHEMA];
            let mut enterprise = serde_json::Map::new();
            for (key, value) in [
                ("displayName", &u.display_name),
                ("externalId", &u.external_id),
                ("title", &u.title),
            ] {
                if let Some(v) = value {
                    expected[key] = v.as_str().into();
                }
            }
            if let Some(phone) = &u.phone {
                expected["phoneNumbers"] = serde_json::json!([{"value": phone, "type": "work"}]);
            }
            for (key, value) in [("employeeNumber", &u.employee_number), ("department", &u.department)] {
                if let Some(v) = value {
                    enterprise.insert(key.into(), v.as_str().into());
                }
            }
            if !enterprise.is_empty() {
                schemas.push(ENTERPRISE_SCHEMA);
                expected[ENTERPRISE_SCHEMA] = enterprise.into();
            }
            let attributes = u.attributes_document().to_value();
            proptest::prop_assert_eq!(&attributes, &expected);
            expected["schemas"] = serde_json::json!(schemas);
            if let Some(id) = id {
                expected["id"] = id.into();
            }
            proptest::prop_assert_eq!(u.to_document(id).to_value(), expected);
        }
    }
}
