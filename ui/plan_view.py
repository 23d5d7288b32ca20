"""The memory plan of a spec, shown on the Jobs page before queueing (``engine.jobs.plan_client``): each stage's
predicted peak and what makes it, the disk, whether it fits, and the sizes that would."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.common import esc


def plan_frame(plan: dict) -> pd.DataFrame:
    """One row per stage: host MB, GPU MB (on CUDA), its three largest parts."""
    rows = []
    for name, s in plan["stages"].items():
        parts = sorted({**s["parts"], **{f"{k} (GPU)": v for k, v in s["gpu_parts"].items()}}.items(),
                       key=lambda kv: -kv[1])
        row = {"stage": name, "host MB": round(s["host_mb"])}
        if plan["device"] == "cuda":
            row["GPU MB"] = round(s["gpu_mb"])
        row["largest parts (MB)"] = ", ".join(f"{k} {v:,.0f}" for k, v in parts[:3] if v >= 0.5)
        rows.append(row)
    return pd.DataFrame(rows)


def show_plan(plan: dict) -> None:
    """The plan as the Jobs page shows it."""
    gpu = plan["device"] == "cuda"
    fits = plan["peak_mb"] <= plan["budget_mb"] and (not gpu or plan["peak_gpu_mb"] <= (plan["gpu_budget_mb"] or 0))
    where = f"{plan['budget_mb'] / 1024:,.1f} GB of host memory" + (
        f" and {plan['gpu_budget_mb'] / 1024:,.1f} GB of GPU memory" if gpu else "")
    peak = f"peak {plan['peak_mb']:,.0f} MB" + (f", GPU {plan['peak_gpu_mb']:,.0f} MB" if gpu else "")
    (st.success if fits else st.error)(
        f"Memory plan for {esc(plan['model'])} on {esc(plan['device'])}: {peak}; "
        f"{'fits' if fits else 'does NOT fit'} {where} (this machine's, unless given).")
    st.caption(f"{plan['n_train']:,} training × {plan['n_test']:,} test samples, longest {plan['tokens']} tokens; "
               f"{plan['lora_params']:,} LoRA values per sample's gradient; gradient batch "
               f"{plan['grad_batch_size']}, fine-tuning micro-batch {plan['micro_batch_size']}. Predicted from the "
               "model's configuration (nothing loaded); within 25 % of the measured peaks on the models we checked.")
    st.dataframe(plan_frame(plan), hide_index=True, width="stretch")
    st.caption("Disk: " + ", ".join(f"{esc(k)} {v:,.0f} MB" for k, v in plan["disk_mb"].items()))
    p = plan["proposals"]
    st.caption("Largest sizes that fit: " + ", ".join(f"{esc(k)} {v}" for k, v in p.items())
               + " (scoring.grad_batch_size, train.micro_batch_size, scoring.shard_size, scoring.proj_dim)")
