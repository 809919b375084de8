//! Instance attributes: `name = value` pairs on the wire, a map in the
//! domain (a name has one value).

use std::collections::BTreeMap;

use berth_types::{limits, validate, FieldError};

use crate::pb;

pub fn attributes_to_wire(attributes: &BTreeMap<String, String>) -> Vec<pb::Attribute> {
    attributes
        .iter()
        .map(|(name, value)| pb::Attribute {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Attributes as a map, the last value of a repeated name winning. A
/// nameless pair is dropped: no constraint could ever refer to it. For
/// what a server has already checked, or an agent's own facts.
pub fn attributes_from_wire(attributes: &[pb::Attribute]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter(|a| !a.name.is_empty())
        .map(|a| (a.name.clone(), a.value.clone()))
        .collect()
}

/// Attributes a person gave (an activation's, an instance's custom ones),
/// checked pair by pair: the first bad one is the error, naming its index.
pub fn checked_attributes_from_wire(
    attributes: &[pb::Attribute],
) -> Result<BTreeMap<String, String>, FieldError> {
    limits::check_count("attributes", attributes.len(), limits::MAX_ATTRIBUTES)?;
    for (i, a) in attributes.iter().enumerate() {
        validate::check_attribute(i, &a.name, &a.value)?;
    }
    Ok(attributes_from_wire(attributes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str, value: &str) -> pb::Attribute {
        pb::Attribute {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn attributes_survive_the_wire_and_bad_names_are_refused_when_checked() {
        let map = BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("disk".to_string(), String::new()),
        ]);
        let wire = attributes_to_wire(&map);
        assert_eq!(attributes_from_wire(&wire), map);
        assert_eq!(checked_attributes_from_wire(&wire), Ok(map));

        let repeated = [pair("zone", "a"), pair("", "x"), pair("zone", "b")];
        assert_eq!(
            attributes_from_wire(&repeated),
            BTreeMap::from([("zone".to_string(), "b".to_string())])
        );
        let err = checked_attributes_from_wire(&repeated).unwrap_err();
        assert_eq!(err.field, "attributes[1].name");
        let err = checked_attributes_from_wire(&[pair("ok", &"v".repeat(257))]).unwrap_err();
        assert_eq!(err.field, "attributes[0].value");
    }
}
