"""bench/sd35_bench.py's sampling on the CPU with a tiny model (the benchmark itself needs a GPU): the
time the host took to queue each step is recorded beside the step's time, and never exceeds it."""
from bench.sd35_bench import conditioning, sample
from devtools.comfy_host import import_comfy_in_process
from devtools.tiny_sd3 import mmdit_state_dict


def test_each_steps_queue_time_is_recorded_within_its_step_time():
    import_comfy_in_process()
    import comfy.sd
    model = comfy.sd.load_diffusion_model_state_dict(mmdit_state_dict("medium", depth=1, seed=0, prefix=""))
    positive, negative = conditioning(0)
    step_times, issue_times = [], []
    sample(model, 64, 4, 0, positive, negative, step_times, issue_times)
    assert len(issue_times) == len(step_times) == 4
    # on the CPU nothing is queued: the host computes each step before the callback
    assert all(0 < queued <= step for queued, step in zip(issue_times, step_times))
