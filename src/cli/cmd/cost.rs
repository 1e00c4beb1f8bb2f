//! `pbak cost`: the monthly estimate, against warning and critical thresholds (exit 0/1/2).

use crate::cli::args::Cli;
use crate::cli::open_repo;
use crate::cli::output::human_bytes;
use anyhow::{Context, Result};
use clap::Args;
use pbak::ops::cost::{self, CostReport, Prices, Thresholds};
use std::path::PathBuf;

/// Prices (defaults: B2's published prices, read 2026-12-02) and thresholds, shared with
/// `status`.
#[derive(Args, Debug)]
pub struct PriceArgs {
    /// Storage price in dollars per TB-month
    #[arg(long, default_value_t = 6.0)]
    pub price_per_tb_month: f64,
    /// Free storage in GB
    #[arg(long, default_value_t = 10.0)]
    pub free_gb: f64,
    /// Class B transactions (downloads, HEADs): dollars per 10,000
    #[arg(long, default_value_t = 0.004)]
    pub price_class_b_per_10k: f64,
    /// Class C transactions (listings): dollars per 1,000
    #[arg(long, default_value_t = 0.004)]
    pub price_class_c_per_1k: f64,
    /// Free transactions per class and day
    #[arg(long, default_value_t = 2500)]
    pub free_per_day: u64,
    /// Download egress beyond the free allowance: dollars per GB
    #[arg(long, default_value_t = 0.01)]
    pub price_egress_per_gb: f64,
    /// Free egress per month, as a multiple of the stored bytes
    #[arg(long, default_value_t = 3.0)]
    pub free_egress_ratio: f64,
    /// Warn at or above this monthly estimate in dollars (exit 1)
    #[arg(long, default_value_t = 8.0)]
    pub warn: f64,
    /// Critical at or above this monthly estimate in dollars (exit 2)
    #[arg(long, default_value_t = 10.0)]
    pub critical: f64,
}

impl PriceArgs {
    pub fn prices(&self) -> Prices {
        Prices {
            per_tb_month: self.price_per_tb_month,
            free_gb: self.free_gb,
            class_b_per_10k: self.price_class_b_per_10k,
            class_c_per_1k: self.price_class_c_per_1k,
            free_per_day: self.free_per_day,
            egress_per_gb: self.price_egress_per_gb,
            free_egress_ratio: self.free_egress_ratio,
        }
    }
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            warn: self.warn,
            critical: self.critical,
        }
    }
}

#[derive(Args, Debug)]
pub struct CostArgs {
    #[command(flatten)]
    pub prices: PriceArgs,
    /// Also write the daily history and the estimate as CSV to this file
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

pub fn run(cli: &Cli, a: &CostArgs) -> Result<i32> {
    let repo = open_repo(cli)?;
    let r = cost::cost(&repo, &a.prices.prices(), &a.prices.thresholds())?;
    if let Some(path) = &a.csv {
        std::fs::write(path, csv(&r)).with_context(|| format!("writing {}", path.display()))?;
    }
    if cli.json {
        println!("{}", serde_json::to_string(&r).expect("json"));
    } else {
        print_text(&r);
    }
    Ok(r.level.exit_code())
}

/// The first line says the level, for mail and journald.
pub fn headline(r: &CostReport) -> String {
    format!(
        "{}: estimated ${:.2} a month for {} (warning at ${:.2}, critical at ${:.2})",
        r.level.word(),
        r.monthly_usd,
        human_bytes(r.stored_bytes),
        r.thresholds.warn,
        r.thresholds.critical
    )
}

fn print_text(r: &CostReport) {
    println!("{}", headline(r));
    println!(
        "  storage      ${:>8.4}  ({} stored, {} GB free)",
        r.storage_usd,
        human_bytes(r.stored_bytes),
        r.prices.free_gb
    );
    println!(
        "  class B      ${:>8.4}  ({:.0} a day over {} days, {} a day free)",
        r.class_b_usd, r.class_b_per_day, r.days, r.prices.free_per_day
    );
    println!(
        "  class C      ${:>8.4}  ({:.0} a day over {} days, {} a day free)",
        r.class_c_usd, r.class_c_per_day, r.days, r.prices.free_per_day
    );
    println!(
        "  egress       ${:>8.4}  ({} a month downloaded)",
        r.egress_usd,
        human_bytes(r.download_bytes_per_month)
    );
    let sign = if r.growth_bytes_per_month < 0 { "-" } else { "+" };
    println!(
        "growth: {sign}{} a month (net of what prune freed)",
        human_bytes(r.growth_bytes_per_month.unsigned_abs())
    );
    for p in &r.projections {
        println!(
            "in {} months: {} stored, ${:.2} a month",
            p.months,
            human_bytes(p.stored_bytes),
            p.monthly_usd
        );
    }
}

fn csv(r: &CostReport) -> String {
    let mut s = String::from("date,class_a,class_b,class_c,bytes_down,bytes_added,bytes_freed\n");
    for d in &r.history {
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            d.date, d.class_a, d.class_b, d.class_c, d.bytes_down, d.bytes_added, d.bytes_freed
        ));
    }
    s.push_str(&format!(
        "# estimate,stored_bytes={},storage_usd={:.6},class_b_usd={:.6},class_c_usd={:.6},egress_usd={:.6},monthly_usd={:.6},level={}\n",
        r.stored_bytes,
        r.storage_usd,
        r.class_b_usd,
        r.class_c_usd,
        r.egress_usd,
        r.monthly_usd,
        r.level.word()
    ));
    s
}
