//! Filter, sort and projection parsing, and filter evaluation, never panic.
#![no_main]
use serde_json::{json, Value};
use zeroservices_core::query::{Filter, Projection, Sort};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Sort::parse(text);
        if let Ok(p) = Projection::parse(text) {
            let _ = p.apply(json!({"a": {"b": [1, {"c": 2}]}, "d": "x"}));
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(f) = Filter::parse(&v) {
        for doc in [json!({}), json!({"a": 1, "b": [1, 2, {"c": "x"}], "d": {"e": null}}), json!({"a": "text here", "n": 1.5})] {
            let _ = f.matches(&doc);
        }
    }
});
