//! `ringload sweep`: capacity search. Runs open-loop steps at rising offered rates (from
//! `--start`, adding `--step` or multiplying by `--factor`) until a step breaks a limit: p99
//! latency over `--p99-target`, error rate over `--max-errors`, or accepted throughput below
//! `--min-achieved` of the offered rate (the server, or the client's connection cap, cannot
//! keep up: the backlog grows). The highest step that held is the capacity figure. Optional
//! bisection (`--refine N`) between the last good and the first bad rate narrows the knee.
//! Bounded by `--max-rate` and `--max-steps`; each step by `--step-duration`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::Phase;
use crate::run::{self, Load, Plan, RunResult, stop_requested};
use crate::units::{fmt_micros, fmt_rate};

/// How the rate grows from step to step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Growth {
    /// Add this many messages per second.
    Add(f64),
    /// Multiply by this factor (> 1).
    Factor(f64),
}

/// A sweep's parameters.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The run template: target, sessions, messages, concurrency cap. Its load and duration
    /// are set per step.
    pub base: Plan,
    /// First rate, messages per second.
    pub start: f64,
    /// Growth per step.
    pub growth: Growth,
    /// Seconds of load per step.
    pub step_duration: Duration,
    /// Pause between steps (lets the server drain its queues).
    pub pause: Duration,
    /// The latency limit.
    pub p99_target: Duration,
    /// Which latency the limit applies to.
    pub metric: Phase,
    /// Largest acceptable failed/attempted.
    pub max_errors: f64,
    /// Smallest acceptable accepted/offered.
    pub min_achieved: f64,
    /// Stop before exceeding this rate.
    pub max_rate: f64,
    /// Stop after this many steps (refinement steps included).
    pub max_steps: u32,
    /// Bisection steps after the first failure.
    pub refine: u32,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepResult {
    /// Offered rate, messages per second.
    pub offered_per_s: f64,
    /// Accepted messages per second of load.
    pub achieved_per_s: f64,
    /// The limited latency's percentiles, µs.
    pub p50_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// 99.9th.
    pub p999_us: u64,
    /// Max.
    pub max_us: u64,
    /// Failed / attempted.
    pub error_rate: f64,
    /// Messages due but never sent.
    pub unsent: u64,
    /// The step held every limit.
    pub pass: bool,
    /// Why it did not.
    pub reason: Option<String>,
    /// The step's full run result.
    pub run: RunResult,
}

/// The capacity figure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Capacity {
    /// Highest offered rate that held, messages per second.
    pub rate_per_s: f64,
    /// Accepted messages per second at that rate.
    pub achieved_per_s: f64,
    /// Its p99, µs.
    pub p99_us: u64,
    /// Accepted messages per hour at that rate.
    pub messages_per_hour: f64,
    /// Mean message size, bytes.
    pub size_mean_bytes: f64,
}

/// The sweep's parameters as reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepConfigReport {
    /// Target.
    pub target: String,
    /// First rate.
    pub start_per_s: f64,
    /// `+N` or `xF`.
    pub growth: String,
    /// Seconds measured per step.
    pub step_duration_s: f64,
    /// Seconds of warm-up before each step's measurement.
    pub warmup_s: f64,
    /// p99 limit, µs.
    pub p99_target_us: u64,
    /// The latency the limit applies to (phase name).
    pub metric: String,
    /// Error-rate limit.
    pub max_errors: f64,
    /// Throughput limit (fraction of offered).
    pub min_achieved: f64,
    /// Connection cap.
    pub concurrency: u32,
}

/// The result of a sweep (the JSON written by `--json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepResult {
    /// Always `sweep`.
    pub kind: String,
    /// ringload's version.
    pub version: String,
    /// Parameters.
    pub config: SweepConfigReport,
    /// Steps in the order run.
    pub steps: Vec<StepResult>,
    /// The capacity figure, if any step held.
    pub capacity: Option<Capacity>,
    /// Why the sweep stopped.
    pub stop_reason: String,
}

/// Judges one step.
fn judge(plan: &SweepPlan, offered: f64, run: RunResult) -> StepResult {
    let summary = run.phase(plan.metric).cloned().unwrap_or_default();
    let achieved = run.counts.ok as f64 / plan.step_duration.as_secs_f64();
    let target_us = plan.p99_target.as_micros() as u64;
    let mut reasons = Vec::new();
    if summary.count == 0 {
        reasons.push("no message was accepted".to_string());
    } else if summary.p99_us > target_us {
        reasons.push(format!("p99 {} over the target {}", fmt_micros(summary.p99_us), fmt_micros(target_us)));
    }
    if run.error_rate > plan.max_errors {
        reasons.push(format!("error rate {:.2}% over {:.2}%", run.error_rate * 100.0, plan.max_errors * 100.0));
    }
    if achieved < plan.min_achieved * offered {
        reasons.push(format!(
            "accepted {} is below {:.0}% of the offered {} (backlog {})",
            fmt_rate(achieved),
            plan.min_achieved * 100.0,
            fmt_rate(offered),
            run.unsent
        ));
    }
    StepResult {
        offered_per_s: offered,
        achieved_per_s: achieved,
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        p999_us: summary.p999_us,
        max_us: summary.max_us,
        error_rate: run.error_rate,
        unsent: run.unsent,
        pass: reasons.is_empty(),
        reason: if reasons.is_empty() { None } else { Some(reasons.join("; ")) },
        run,
    }
}

/// Runs the sweep.
pub fn sweep(plan: SweepPlan) -> Result<SweepResult, String> {
    let mut steps: Vec<StepResult> = Vec::new();
    let mut rate = plan.start;
    let mut best: Option<usize> = None;
    let mut first_bad: Option<f64> = None;
    let mut stop_reason = String::new();
    let mut refinements = 0;
    while (steps.len() as u32) < plan.max_steps {
        if stop_requested() {
            stop_reason = "interrupted".into();
            break;
        }
        let step = run_step(&plan, rate, steps.len() + 1)?;
        let pass = step.pass;
        steps.push(step);
        if pass {
            if best.is_none_or(|b| steps[b].offered_per_s < rate) {
                best = Some(steps.len() - 1);
            }
        } else {
            first_bad = Some(first_bad.map_or(rate, |b: f64| b.min(rate)));
        }
        // Choose the next rate.
        match first_bad {
            None => {
                let next = match plan.growth {
                    Growth::Add(d) => rate + d,
                    Growth::Factor(f) => rate * f,
                };
                if next > plan.max_rate * (1.0 + 1e-9) {
                    stop_reason = format!("reached --max-rate {} without breaking a limit", fmt_rate(plan.max_rate));
                    break;
                }
                rate = next;
            }
            Some(bad) => {
                let good = best.map_or(0.0, |b| steps[b].offered_per_s);
                if refinements >= plan.refine || good == 0.0 {
                    stop_reason = format!("a limit broke at {}", fmt_rate(bad));
                    break;
                }
                refinements += 1;
                rate = (good + bad) / 2.0;
                if (bad - good) / bad < 0.02 {
                    stop_reason = format!("knee located between {} and {}", fmt_rate(good), fmt_rate(bad));
                    break;
                }
            }
        }
        if !plan.pause.is_zero() {
            std::thread::sleep(plan.pause);
        }
    }
    if stop_reason.is_empty() {
        stop_reason = format!("reached --max-steps {}", plan.max_steps);
    }
    let capacity = best.map(|b| {
        let s = &steps[b];
        Capacity {
            rate_per_s: s.offered_per_s,
            achieved_per_s: s.achieved_per_s,
            p99_us: s.p99_us,
            messages_per_hour: s.achieved_per_s * 3600.0,
            size_mean_bytes: plan.base.spec.size.mean(),
        }
    });
    let growth = match plan.growth {
        Growth::Add(d) => format!("+{d}/s"),
        Growth::Factor(f) => format!("x{f}"),
    };
    Ok(SweepResult {
        kind: "sweep".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        config: SweepConfigReport {
            target: plan.base.target.to_string(),
            start_per_s: plan.start,
            growth,
            step_duration_s: plan.step_duration.as_secs_f64(),
            warmup_s: plan.base.warmup.as_secs_f64(),
            p99_target_us: plan.p99_target.as_micros() as u64,
            metric: plan.metric.name().into(),
            max_errors: plan.max_errors,
            min_achieved: plan.min_achieved,
            concurrency: plan.base.concurrency,
        },
        steps,
        capacity,
        stop_reason,
    })
}

fn run_step(plan: &SweepPlan, rate: f64, number: usize) -> Result<StepResult, String> {
    let mut p = plan.base.clone();
    p.load = Load::Open { rate };
    p.duration = plan.step_duration;
    p.messages = None;
    let r = run::run(p)?;
    let step = judge(plan, rate, r);
    eprintln!(
        "sweep step {number}: offered {:>9} → accepted {:>9}, {} p50 {} p99 {}, errors {:.2}%  {}",
        fmt_rate(step.offered_per_s),
        fmt_rate(step.achieved_per_s),
        plan.metric.name(),
        fmt_micros(step.p50_us),
        fmt_micros(step.p99_us),
        step.error_rate * 100.0,
        match &step.reason {
            None => "ok".to_string(),
            Some(r) => format!("LIMIT: {r}"),
        }
    );
    Ok(step)
}

/// The human-readable sweep report (stdout).
pub fn print_report(r: &SweepResult) {
    let c = &r.config;
    println!(
        "ringload sweep: {} — limits: {} p99 ≤ {}, errors ≤ {:.2}%, accepted ≥ {:.0}% of offered",
        c.target,
        c.metric,
        fmt_micros(c.p99_target_us),
        c.max_errors * 100.0,
        c.min_achieved * 100.0
    );
    println!("{:>10} {:>10} {:>10} {:>10} {:>10} {:>8}  verdict", "offered", "accepted", "p50", "p99", "max", "errors");
    for s in &r.steps {
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>7.2}%  {}",
            fmt_rate(s.offered_per_s),
            fmt_rate(s.achieved_per_s),
            fmt_micros(s.p50_us),
            fmt_micros(s.p99_us),
            fmt_micros(s.max_us),
            s.error_rate * 100.0,
            s.reason.as_deref().unwrap_or("ok")
        );
    }
    println!("stopped: {}", r.stop_reason);
    match &r.capacity {
        Some(cap) => println!(
            "capacity: {} offered held ({} accepted, p99 {}) = {:.0} messages/hour at {:.0} bytes mean size",
            fmt_rate(cap.rate_per_s),
            fmt_rate(cap.achieved_per_s),
            fmt_micros(cap.p99_us),
            cap.messages_per_hour,
            cap.size_mean_bytes
        ),
        None => println!("capacity: no step held the limits; start lower (--start)"),
    }
}
