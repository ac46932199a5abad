//! Differential computations checked against from-scratch recomputation.
use std::collections::BTreeSet;
use std::sync::Arc;

use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::reward::cache_join::missing_keys;
use dicoflow::reward::cider_df::{corpus_document_frequencies, ngrams, DocFreqs};
use dicoflow::rng::Rng;

#[test]
fn ngrams_cover_orders_one_to_four() {
    let g = ngrams("A red circle, left of a square.", 4);
    assert_eq!(g.len(), 7 + 6 + 5 + 4);
    assert!(g.contains(&vec![
        "left".into(),
        "of".into(),
        "a".into(),
        "square".into()
    ]));
}

#[test]
fn document_frequencies_match_a_direct_count() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorldSpec {
        train: 150,
        val: 0,
        test: 0,
        rows_per_shard: 50,
        rows_per_row_group: 10,
        ..Default::default()
    };
    write_world(dir.path(), &spec, false, |_| {}).unwrap();
    let index =
        Arc::new(ShardIndex::open(&dir.path().join("train"), &LayoutOptions::default()).unwrap());
    // The oracle: every image's captions, read straight from the shards.
    let mut all = Vec::new();
    let mut src = ShardSource::new(index.clone(), SourceConfig::default(), 0, 1).unwrap();
    while let Some(item) = src.next_item().unwrap() {
        if let SourceItem::Sample(s) = item {
            all.push(s.captions);
        }
    }
    let direct = DocFreqs::direct(all.iter().map(|c| c.as_slice()), 4);
    for workers in [1, 2] {
        let df = corpus_document_frequencies(index.clone(), SourceConfig::default(), 4, workers)
            .unwrap();
        assert_eq!(df.images, 150);
        assert_eq!(df, direct, "{workers} workers");
    }
    // Something worth checking is in there: frequent words, rarer 4-grams.
    assert!(direct.df.len() > 100);
    assert!(direct.df.values().any(|&n| n > 50));
    assert!(direct.df.values().any(|&n| n == 1));
}

#[test]
fn the_cache_join_returns_exactly_the_missing_keys() {
    let mut rng = Rng::derive(5, &[]);
    let key = |i: usize| format!("img{i:04}/{}", i % 5);
    let present: Vec<String> = (0..400).filter(|i| i % 3 != 0).map(key).collect();
    // Requests repeat keys and include keys the cache does not have.
    let mut requested: Vec<String> = (0..600).map(|_| key(rng.index(600))).collect();
    requested.extend((0..50).map(key));
    let have: BTreeSet<&String> = present.iter().collect();
    let expected: Vec<String> = requested
        .iter()
        .filter(|k| !have.contains(k))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(!expected.is_empty() && expected.len() < requested.len());
    for workers in [1, 3] {
        assert_eq!(
            missing_keys(&present, &requested, workers).unwrap(),
            expected
        );
    }
    assert!(missing_keys(&present, &present, 2).unwrap().is_empty());
    assert_eq!(
        missing_keys(&[], &requested[..3], 1).unwrap().len(),
        requested[..3].iter().collect::<BTreeSet<_>>().len()
    );
}
