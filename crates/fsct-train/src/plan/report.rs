//! The planner's tables: one training step and one evaluation episode by component, and which
//! settings fit each of a list of budgets.

use std::fmt::Write;

use super::budget::{candidates, fits, gib, largest_n_query, Budget, Candidate};
use super::components::vic_buffers;
use super::Prediction;

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn row(out: &mut String, what: &str, bytes: u64, note: &str) {
    let _ = writeln!(out, "| {what} | {} | {note} |", mib(bytes));
}

/// The table of one prediction (markdown).
pub fn table(p: &Prediction) -> String {
    let c = &p.config;
    let e = &c.episodes;
    let m = &p.measured;
    let s = |bytes: u64| (bytes as f64 * p.scale).round() as u64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Memory plan: {} {} at {} px, {}-way {}-shot {} queries ({} images), precision {}, checkpointing {}, VIC {}, on {}.",
        c.model.method.name(),
        c.backbone(),
        c.image_size(),
        e.n_way,
        e.k_shot,
        e.n_query,
        p.images,
        super::budget::precision_name(c.memory.precision),
        c.memory.gradient_checkpoint.name(),
        if c.model.use_vic { "on" } else { "off" },
        p.device.name(),
    );
    let _ = writeln!(
        out,
        "Parameters: {} ({} trained, {} in the backbone). Activations measured on the CPU at {} and {} images, extended to {}{}.\n",
        m.counts.total,
        m.counts.trained,
        m.counts.backbone_trained,
        m.samples.0,
        m.samples.1,
        p.images,
        if p.scale != 1.0 { "; pure half: the f32 measurement halved" } else { "" },
    );
    out.push_str("One training step\n\n| component | MiB | note |\n|---|---|---|\n");
    row(&mut out, "parameters", p.state.params, "master dtype; held throughout");
    let buffers = match c.optim.optimizer.state_buffers(c.optim.momentum) {
        2 => "two moments per trained parameter",
        1 => "a momentum buffer per trained parameter",
        _ => "none: plain SGD",
    };
    let optimizer_note = format!("{}: {buffers}", c.optim.optimizer.name());
    row(&mut out, "optimizer state", p.state.optimizer, &optimizer_note);
    row(&mut out, "episode", p.state.episode, "the episode tensor as loaded");
    if m.half_copy > 0 {
        row(
            &mut out,
            "half copy of the model",
            s(m.half_copy),
            "mixed precision: made each step, dropped after the backward pass",
        );
        row(&mut out, "episode in half", p.state.episode_half, "");
    }
    let kept = s(m.backbone.kept.at(p.images));
    row(
        &mut out,
        "activations kept, backbone",
        kept,
        &format!(
            "for the backward pass, under checkpointing \"{}\"",
            c.memory.gradient_checkpoint.name()
        ),
    );
    for (name, per_image) in &m.blocks {
        row(
            &mut out,
            &format!("  {name} (without checkpointing)"),
            s(per_image * p.images as u64),
            &format!("{} KiB per image", s(*per_image) / 1024),
        );
    }
    row(
        &mut out,
        "activations kept, head",
        s(m.head.kept.at(e.n_query)),
        "transformer, loss (and VIC)",
    );
    if let Some((form, bytes)) = vic_buffers(c, m.feature_dim, e.n_query) {
        row(
            &mut out,
            &format!("  VIC covariance ({form})"),
            bytes,
            &format!("d = {}; inside the head's figures", m.feature_dim),
        );
    }
    row(
        &mut out,
        "gradients",
        p.state.gradients,
        "trained parameters, master dtype; alive until the update",
    );
    let ph = &p.phases;
    row(&mut out, "phase: forward pass", ph.forward, "peak above the step's start");
    row(&mut out, "phase: head forward + backward", ph.head, "with every kept backbone activation");
    row(
        &mut out,
        "phase: backbone backward",
        ph.backbone_backward,
        "largest transient buffers: activation gradients, recomputed segments",
    );
    row(
        &mut out,
        "phase: optimizer update",
        ph.optimizer,
        "gradients + the optimizer's temporaries",
    );
    let (phase, _) = ph.peak();
    row(&mut out, "**step peak above its start**", p.step_above_start, &format!("at the {phase}"));
    row(
        &mut out,
        "allocator overhead",
        p.overhead,
        if p.overhead == 0 {
            "none counted on the CPU"
        } else {
            "cubecl pools (estimate, not validated on a GPU)"
        },
    );
    row(&mut out, "**training step peak**", p.step_total, &gib(p.step_total));
    out.push_str("\nOne evaluation episode (no autodiff; the optimizer state stays during validation)\n\n| component | MiB | note |\n|---|---|---|\n");
    row(
        &mut out,
        "held: parameters + optimizer + episode",
        p.state.params + p.state.optimizer + p.state.episode,
        "",
    );
    row(
        &mut out,
        "forward peak above its start",
        p.eval_above_start,
        "backbone, then the head on its features",
    );
    row(&mut out, "**evaluation peak**", p.eval_total, &gib(p.eval_total));
    out
}

/// For each budget, which candidate settings fit and the fastest that does (`predictions` in
/// the order of [`candidates`]).
pub fn budgets_table(predictions: &[(Candidate, Prediction)], budgets: &[Budget]) -> String {
    let mut out = String::from("\nSettings by budget (fastest first)\n\n| settings | peak |");
    for b in budgets {
        let _ = write!(out, " {b} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(budgets.len()));
    out.push('\n');
    for (candidate, p) in predictions {
        let _ = write!(out, "| {} | {} |", candidate.describe(), gib(p.peak()));
        for b in budgets {
            out.push_str(if fits(p, *b) { " fits |" } else { " — |" });
        }
        out.push('\n');
    }
    out.push('\n');
    for b in budgets {
        match predictions.iter().find(|(_, p)| fits(p, *b)) {
            Some((candidate, p)) => {
                let _ = writeln!(out, "{b}: {} (peak {})", candidate.describe(), gib(p.peak()));
            }
            None => {
                let advice = predictions
                    .last()
                    .and_then(|(candidate, p)| {
                        largest_n_query(p, *b).map(|q| {
                            format!(
                                "episodes.n_query = {q} with {} (peak {})",
                                candidate.describe(),
                                gib(p.with_n_query(q).peak())
                            )
                        })
                    })
                    .unwrap_or_else(|| {
                        "nothing at this n_query or fewer queries: use a smaller backbone or images"
                            .into()
                    });
                let _ = writeln!(out, "{b}: no setting fits; {advice}");
            }
        }
    }
    out
}

/// The candidates of a config, for [`budgets_table`].
pub fn candidate_list(config: &crate::config::Config) -> Vec<Candidate> {
    candidates(config)
}
