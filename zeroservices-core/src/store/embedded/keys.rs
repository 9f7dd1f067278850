//! Order-preserving byte keys of secondary index entries: `encode(value) ++ id`, where the
//! encoded value is self-delimiting and compares bytewise exactly as [`crate::query::cmp_values`]
//! orders scalars (null < numbers < strings < objects < arrays < booleans), so a range of keys
//! is a range of values and, within one value, ids come in ascending order.
//!
//! Objects and arrays are encoded by their type alone (index entries for sorting only: all of
//! them tie, and the reader orders a tie with the full comparison).

use serde_json::{Number, Value};

const NULL: u8 = 0x10;
const NUMBER: u8 = 0x20;
const STRING: u8 = 0x30;
const OBJECT: u8 = 0x40;
const ARRAY: u8 = 0x50;
const BOOL: u8 = 0x60;

/// Appends the encoding of `v` to `out`.
pub(super) fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(NULL),
        Value::Number(n) => {
            out.push(NUMBER);
            encode_number(n, out);
        }
        Value::String(s) => {
            out.push(STRING);
            for &b in s.as_bytes() {
                out.push(b);
                if b == 0 {
                    out.push(0xFF);
                }
            }
            out.extend_from_slice(&[0, 0]);
        }
        Value::Object(_) => out.push(OBJECT),
        Value::Array(_) => out.push(ARRAY),
        Value::Bool(b) => out.extend_from_slice(&[BOOL, u8::from(*b)]),
    }
}

/// The encoding of `v` alone.
pub(super) fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    encode_into(v, &mut out);
    out
}

/// A number as its nearest `f64` (order-preserving bits), then the exact distance of an integer
/// from that `f64`, so integers beyond 2^53 still order and compare exactly, and `1 == 1.0`.
fn encode_number(n: &Number, out: &mut Vec<u8>) {
    let (f, rest) = if let Some(i) = n.as_i64() {
        let f = i as f64;
        (f, i128::from(i) - f as i128)
    } else if let Some(u) = n.as_u64() {
        let f = u as f64;
        (f, i128::from(u) - f as i128)
    } else {
        (n.as_f64().unwrap_or(0.0), 0)
    };
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 == 0.0
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    out.extend_from_slice(&ordered.to_be_bytes());
    // |rest| < 2^11: an i64 with its sign bit flipped orders as the number does.
    let rest = i64::try_from(rest).unwrap_or(0);
    out.extend_from_slice(&((rest as u64) ^ (1 << 63)).to_be_bytes());
}

/// The length of the encoded value at the start of `key` (the id follows it).
pub(super) fn value_len(key: &[u8]) -> usize {
    match key.first() {
        Some(&NUMBER) => 17,
        Some(&BOOL) => 2,
        Some(&STRING) => {
            let mut i = 1;
            while i < key.len() {
                if key[i] == 0 {
                    match key.get(i + 1) {
                        Some(0xFF) => i += 2,
                        _ => return (i + 2).min(key.len()),
                    }
                } else {
                    i += 1;
                }
            }
            key.len()
        }
        Some(_) => 1,
        None => 0,
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: there is none).
pub(super) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// The first key of a value of `v`'s type, and the first key after that type's values.
pub(super) fn type_bounds(v: &Value) -> (Vec<u8>, Vec<u8>) {
    let rank = encode(v)[0];
    (vec![rank], vec![rank + 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::cmp_values;
    use serde_json::json;

    #[test]
    fn byte_order_is_value_order() {
        let values = [
            json!(null),
            json!(-1e300),
            json!(i64::MIN),
            json!(-3),
            json!(-2.5),
            json!(0),
            json!(0.5),
            json!(1),
            json!(9007199254740993u64),
            json!(9007199254740994u64),
            json!(u64::MAX),
            json!(1e300),
            json!(""),
            json!("a"),
            json!("a\u{0}"),
            json!("a\u{1}"),
            json!("ab"),
            json!("b"),
            json!({"x": 1}),
            json!([1]),
            json!(false),
            json!(true),
        ];
        for a in &values {
            for b in &values {
                let (ea, eb) = (encode(a), encode(b));
                let want = match (a, b) {
                    (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_)) => {
                        std::cmp::Ordering::Equal
                    }
                    _ => cmp_values(a, b),
                };
                assert_eq!(ea.cmp(&eb), want, "{a} vs {b}");
                assert_eq!(value_len(&[ea.as_slice(), b"id"].concat()), ea.len());
            }
        }
        assert_eq!(encode(&json!(1)), encode(&json!(1.0)));
        assert_eq!(encode(&json!(-0.0)), encode(&json!(0)));
    }

    #[test]
    fn successor_bounds_a_prefix() {
        assert_eq!(successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF]), None);
    }
}
