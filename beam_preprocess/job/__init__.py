"""The Apache Beam job behind `hccr-preprocess`: planning (`pipeline`), the per-shard work
(`transforms`), writer splits (`splits`), runner choice and checks (`runners`) and live
progress (`job_progress`). It reads and writes only through `beam_preprocess.contract`.
"""
