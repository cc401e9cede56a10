//! Layers written into the store: one pass gives a blob whose digest and diffID are right,
//! an empty upper gives no layer, and recompression keeps (and checks) the diffID.

mod common;

use cairn::layer::{self, Compression, Layer, LayerOptions};
use cairn::store::Store;
use cairn::Digest;
use std::fs;
use std::io::Read;

fn tree(root: &std::path::Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(
        root.join("usr/bin/tool"),
        "#!/bin/sh\necho hi\n".repeat(500),
    )
    .unwrap();
    fs::write(root.join("readme"), "hello").unwrap();
}

fn uncompressed(store: &Store, l: &Layer) -> Vec<u8> {
    let c = l.compression().unwrap();
    let mut out = Vec::new();
    layer::decoder(c, store.open_blob(&l.digest).unwrap())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn from_upper_stores_blob_with_both_digests() {
    let t = common::tempdir();
    let store = Store::open(&t.path().join("store")).unwrap();
    let up = t.path().join("upper");
    tree(&up);
    let opts = LayerOptions {
        source_date_epoch: Some(1),
        ..LayerOptions::default()
    };
    let mut tar = Vec::new();
    layer::write_tar(&up, &mut tar, &opts).unwrap();
    let mut seen = Vec::new();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let l = layer::from_upper(
            &store,
            &up,
            &LayerOptions {
                compression: c,
                ..opts.clone()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.diff_id, Digest::of_bytes(&tar), "{c}");
        assert_eq!(l.media_type, c.media_type());
        let blob = fs::read(store.blob_path(&l.digest)).unwrap();
        assert_eq!(Digest::of_bytes(&blob), l.digest);
        assert_eq!(blob.len() as u64, l.size);
        assert_eq!(uncompressed(&store, &l), tar);
        seen.push(l);
    }
    assert_eq!(seen[0].digest, seen[0].diff_id);
    assert_ne!(seen[1].digest, seen[2].digest);

    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(layer::from_upper(&store, &empty, &opts).unwrap(), None);
}

#[test]
fn from_tar_matches_from_upper() {
    let t = common::tempdir();
    let store = Store::open(&t.path().join("store")).unwrap();
    let up = t.path().join("upper");
    tree(&up);
    let opts = LayerOptions::default();
    let direct = layer::from_upper(&store, &up, &opts).unwrap().unwrap();
    let produced = layer::from_tar(&store, opts.compression, |w| {
        layer::write_tar(&up, w, &opts)
    })
    .unwrap()
    .unwrap();
    assert_eq!(produced, direct);
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let none = layer::from_tar(&store, opts.compression, |w| {
        layer::write_tar(&empty, w, &opts)
    });
    assert_eq!(none.unwrap(), None);
    // The producer's own error comes back as it is.
    let err = layer::from_tar(&store, opts.compression, |_| {
        Err(layer::Error::Message("helper died".into()))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "helper died");
}

#[test]
fn recompress_keeps_and_checks_the_diff_id() {
    let t = common::tempdir();
    let store = Store::open(&t.path().join("store")).unwrap();
    let up = t.path().join("upper");
    tree(&up);
    let zst = layer::from_upper(&store, &up, &LayerOptions::default())
        .unwrap()
        .unwrap();
    let gz = layer::recompress(&store, &zst, Compression::Gzip).unwrap();
    assert_eq!(gz.diff_id, zst.diff_id);
    assert_eq!(gz.media_type, Compression::Gzip.media_type());
    // Same as writing gzip directly: recompression is as deterministic as writing.
    let direct = layer::from_upper(
        &store,
        &up,
        &LayerOptions {
            compression: Compression::Gzip,
            ..LayerOptions::default()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(gz, direct);
    let plain = layer::recompress(&store, &gz, Compression::None).unwrap();
    assert_eq!(plain.digest, plain.diff_id);
    assert_eq!(
        layer::recompress(&store, &plain, Compression::None).unwrap(),
        plain
    );

    // A media type that lies is sniffed past; a wrong diffID is caught.
    let lying = Layer {
        media_type: "application/octet-stream".into(),
        ..zst.clone()
    };
    assert_eq!(
        layer::recompress(&store, &lying, Compression::Gzip).unwrap(),
        gz
    );
    let wrong = Layer {
        diff_id: Digest::of_bytes(b"not it"),
        ..zst
    };
    let err = layer::recompress(&store, &wrong, Compression::Gzip).unwrap_err();
    assert!(matches!(err, layer::Error::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn recompress_is_remembered() {
    let t = common::tempdir();
    let store = Store::open(&t.path().join("store")).unwrap();
    let up = t.path().join("upper");
    tree(&up);
    let zst = layer::from_upper(&store, &up, &LayerOptions::default())
        .unwrap()
        .unwrap();
    let gz = layer::recompress(&store, &zst, Compression::Gzip).unwrap();
    // With the source blob gone, only the remembered conversion can answer.
    fs::remove_file(store.blob_path(&zst.digest)).unwrap();
    assert_eq!(
        layer::recompress(&store, &zst, Compression::Gzip).unwrap(),
        gz
    );
    // Its blob gone too: the memo is not trusted, and the missing source is reported.
    fs::remove_file(store.blob_path(&gz.digest)).unwrap();
    let err = layer::recompress(&store, &zst, Compression::Gzip).unwrap_err();
    assert!(matches!(err, layer::Error::Store(_)), "{err}");
}
