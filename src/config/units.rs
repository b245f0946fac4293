//! Human-friendly scalar types of the policy file: durations (`30s`, `250ms`)
//! and byte sizes (`4MiB`). Each parses from a YAML string and reports a
//! message that says what a valid value looks like; the YAML layer adds the
//! file, line and column.

use serde::de::{self, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written as an integer and a unit: `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration `{text}` needs a unit: ms, s, m or h (e.g. 30s)"))?;
        let (number, unit) = text.split_at(split);
        let number: u64 =
            number.parse().map_err(|_| format!("duration `{text}` must start with a whole number"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => {
                return Err(format!("duration `{text}` has unknown unit `{unit}`: use ms, s, m or h"));
            }
        };
        Ok(Self(duration))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(de::Error::custom)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*[0-9]+(ms|s|m|h)\\s*$",
            "description": "A whole number and a unit: ms, s, m or h (e.g. 30s)",
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// A byte count written as an integer with an optional unit: `B`, `KiB`,
/// `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("size `{text}` must start with a whole number (e.g. 4MiB)"))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "size `{text}` has unknown unit `{other}`: use B, KiB, MiB, GiB, KB, MB or GB"
                ));
            }
        };
        number.checked_mul(factor).map(Self).ok_or_else(|| format!("size `{text}` is too large"))
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|KB|MB|GB)?\\s*$" },
            ],
            "description": "Bytes: a whole number with an optional unit, B, KiB, MiB, GiB, KB, MB or GB (e.g. 4MiB)",
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 4MiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(HumanDuration::parse("250ms"), Ok(HumanDuration(Duration::from_millis(250))));
        assert_eq!(HumanDuration::parse("30s"), Ok(HumanDuration(Duration::from_secs(30))));
        assert_eq!(HumanDuration::parse("2m"), Ok(HumanDuration(Duration::from_secs(120))));
        assert_eq!(HumanDuration::parse("1h"), Ok(HumanDuration(Duration::from_secs(3600))));
        assert!(HumanDuration::parse("30").unwrap_err().contains("needs a unit"));
        assert!(HumanDuration::parse("3 days").unwrap_err().contains("unknown unit"));
        assert!(HumanDuration::parse("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("4MiB"), Ok(ByteSize(4 << 20)));
        assert_eq!(ByteSize::parse("10KB"), Ok(ByteSize(10_000)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert!(ByteSize::parse("4 parsecs").unwrap_err().contains("unknown unit"));
        assert!(ByteSize::parse("99999999999999GiB").unwrap_err().contains("too large"));
    }
}
