//! What a run measured: the tally each worker keeps, merged into one report per target.

use std::collections::BTreeMap;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Target;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) target: Target,
    pub(crate) calls: u64,
    pub(crate) seconds: f64,
    pub(crate) rate: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Calls per gRPC status code.
    pub(crate) codes: BTreeMap<String, u64>,
    /// VerifyApiKey answers per verification code (verify targets only).
    pub(crate) verification_codes: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) histogram: Option<Histogram<u64>>,
    pub(crate) codes: BTreeMap<String, u64>,
    pub(crate) verification_codes: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self { histogram: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?), ..Self::default() })
    }

    pub(crate) fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        if let (Some(mine), Some(theirs)) = (self.histogram.as_mut(), other.histogram.as_ref()) {
            mine.add(theirs)?;
        }
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
        for (code, n) in other.verification_codes {
            *self.verification_codes.entry(code).or_default() += n;
        }
        Ok(())
    }
}

pub(crate) fn summarize(target: Target, mut total: Tally, seconds: f64) -> anyhow::Result<Report> {
    let histogram = total.histogram.take().context("histogram")?;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let calls = histogram.len();
    Ok(Report {
        target,
        calls,
        seconds,
        rate: calls as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
        codes: total.codes,
        verification_codes: total.verification_codes,
    })
}

pub(crate) fn print_report(report: &Report) {
    println!(
        "{:?}: {} calls in {:.2}s = {:.0}/s  p50 {:.3}ms  p90 {:.3}ms  p99 {:.3}ms  max {:.3}ms  codes {:?}{}",
        report.target,
        report.calls,
        report.seconds,
        report.rate,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.max_ms,
        report.codes,
        if report.verification_codes.is_empty() {
            String::new()
        } else {
            format!("  answers {:?}", report.verification_codes)
        },
    );
}
