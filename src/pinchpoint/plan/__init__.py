"""Full-scale pre-flight: parameter counts, memory per device, step time by term, and
time-to-train against the MLPerf RCPs. Pure arithmetic over config; nothing here allocates
tensors or touches a device, and nothing here knows a workload.

Generic pieces for any workload's planner: ``compute`` (FLOPs and bytes -> seconds at the
calibrated achieved rates), ``network`` (collectives on the two-level NVLink-domain + NIC
topology), ``pipeline`` (layer splits, interleaved bubble), ``time_to_train`` (RCP steps x step
+ evals + init), ``hardware`` (GPU presets), ``llm`` and ``moe`` (dense and MoE decoders). Each
workload's own planner lives in its folder and is named by its WorkloadSpec (``planner``);
``pinchpoint.workloads.plan_point(cfg)`` runs the one a run config's model names."""
