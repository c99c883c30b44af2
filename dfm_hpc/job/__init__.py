"""What a rank runs: `rank.run_stage` and the runtime the stages share (training, data, shards, DeepSpeed).

Imports torch & co. lazily where it needs them; never imports dfm_hpc.login or a stage.
"""
