//! Reading cgroupfs and `/proc` ahead of a scraper's next scrape: once per scrape for a scraper
//! at a steady interval, never for one at no steady interval.

use std::time::{Duration, Instant};

use crate::support::{self, Agent, parse, privileged, value};

fn reads_ahead(body: &str) -> f64 {
    value(&parse(body), "kernsight_scrape_reads_ahead_total", &[])
}

/// Scrapes when `at` comes (scrapes by start time, as Prometheus makes them, so that the
/// intervals the agent sees do not carry the scrapes' own durations).
fn scrape_at(agent: &Agent, at: Instant) -> String {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    agent.scrape()
}

#[test]
fn a_steady_scraper_is_read_ahead_for_once_per_scrape_and_an_irregular_one_never() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let agent = Agent::start(&[]);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    // Six scrapes 1.5 s apart: the third makes two equal intervals, so the fourth, fifth and
    // sixth are read ahead for.
    let mut body = String::new();
    for i in 0..6 {
        body = scrape_at(&agent, at(i * 1500));
        if i < 3 {
            assert_eq!(reads_ahead(&body), 0.0, "scrape {i}: no steady interval yet");
        }
    }
    let by_the_sixth = reads_ahead(&body);
    assert!(
        (2.0..=3.0).contains(&by_the_sixth),
        "the fourth and fifth scrapes were read ahead for (the sixth's may still run): {by_the_sixth}\n{}",
        agent.log()
    );
    // The scraper stops: the seventh scrape, due at 9 s, is read ahead for in vain, once.
    body = scrape_at(&agent, at(9_600));
    assert_eq!(reads_ahead(&body), 4.0, "{}", agent.log());
    let seconds = value(&parse(&body), "kernsight_scrape_read_ahead_duration_seconds_total", &[]);
    assert!(seconds > 0.0, "four reads ahead took {seconds} s");

    // At no steady interval (each one a tenth or more from the one before): never read for.
    let mut next = 9_600;
    for gap in [1_200, 2_600, 1_300, 2_700] {
        next += gap;
        body = scrape_at(&agent, at(next));
    }
    assert_eq!(reads_ahead(&body), 4.0, "no read ahead for an irregular scraper\n{}", agent.log());
}
