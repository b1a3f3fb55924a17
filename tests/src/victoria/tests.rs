//! Unit tests of `victoria`: its scrape config and command line (`--lib`, no root).

use std::path::Path;

use super::*;

#[test]
fn the_scrape_config_scrapes_the_target_every_second_as_job_cellwatch() {
    let v: Value = serde_saphyr::from_str(&scrape_config(9473)).expect("YAML");
    assert_eq!(v["global"]["scrape_interval"], "1s");
    assert_eq!(v["global"]["scrape_timeout"], "1s");
    let job = &v["scrape_configs"][0];
    assert_eq!(job["job_name"], "cellwatch");
    assert_eq!(job["static_configs"][0]["targets"], serde_json::json!(["127.0.0.1:9473"]));
}

#[test]
fn queries_read_up_to_now_and_scraping_is_only_with_a_config() {
    let plain = args(Path::new("/d"), 8428, None);
    assert_eq!(
        plain,
        [
            "-storageDataPath=/d",
            "-httpListenAddr=127.0.0.1:8428",
            "-retentionPeriod=1d",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]
    );
    let scraping = args(Path::new("/d"), 8428, Some(Path::new("/d/scrape.yml")));
    assert_eq!(scraping.last().map(String::as_str), Some("-promscrape.config=/d/scrape.yml"));
    assert_eq!(scraping.len(), plain.len() + 1);
}
