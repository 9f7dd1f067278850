//! Update parsing and application never panic, and a failed update leaves the document as it was.
#![no_main]
use serde_json::Value;
use zeroservices_core::query::Update;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Two JSON values in a row: the document, then the update.
    let mut it = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(mut doc)), Some(Ok(update))) = (it.next(), it.next()) else { return };
    if !doc.is_object() {
        return;
    }
    if let Ok(u) = Update::parse(&update) {
        let before = doc.clone();
        match u.apply(&mut doc) {
            Ok(()) => assert!(doc.is_object()),
            Err(_) => assert_eq!(doc, before, "a failed update changed the document"),
        }
    }
});
