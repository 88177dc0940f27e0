"""The proxy's base: pretrained once per storage tier on the pretraining task, saved as a
Hugging Face safetensors checkpoint, reused on the next run, and worse on the fine-tuning task
than on its own (the planted shift the adapters must close)."""
import numpy as np
import torch

from pinchpoint.workloads.llama2_70b_lora import base, data, hf_checkpoint, synthetic
from pinchpoint.workloads.llama2_70b_lora.model import Llama2Args, Llama2ForCausalLM

ARGS = Llama2Args(dim=32, n_layers=1, n_heads=4, n_kv_heads=1, ffn_dim=112, vocab_size=64,
                  max_seq_len=256)
TASK = {"successors": 4, "g1_std": 1.0, "g2_std": 3.0, "g2_rank": 4, "mean_doc_tokens": 40.0,
        "report_fraction": 0.5, "seed": 7, "shift_seed": 8}
PRETRAIN = {"sequences": 480, "seq_len": 32, "batch_size": 16, "learning_rate": 1e-2,
            "seed": 3}


def mean_loss(model, ids, labels) -> float:
    from pinchpoint.workloads.llama2_70b_lora.model import causal_lm_loss
    with torch.no_grad():
        total, count = causal_lm_loss(model(torch.from_numpy(ids)), torch.from_numpy(labels))
    return float(total / count)


def test_base_is_made_once_and_knows_only_its_task(tmp_path):
    folder, manifest = base.ensure(str(tmp_path), ARGS, TASK, PRETRAIN)
    again, manifest_again = base.ensure(str(tmp_path), ARGS, TASK, PRETRAIN)
    assert again == folder and manifest_again["created"] == manifest["created"]  # reused
    assert {"config.json", "model.safetensors"} <= set(manifest["files"])
    model = Llama2ForCausalLM(ARGS).eval()
    hf_checkpoint.load_base(model, folder)
    own = synthetic.pretraining_rows(ARGS.vocab_size, TASK, 32, 32, seed=99)
    data_folder, _ = synthetic.ensure(str(tmp_path), {
        "vocab_size": ARGS.vocab_size, "seq_len": 32, "train_sequences": 8,
        "validation_sequences": 32, "task": TASK})
    shifted = data.read_split(data_folder, "validation", 32, ARGS.vocab_size)
    on_own = mean_loss(model, own, own)
    on_shifted = mean_loss(model, shifted.input_ids, shifted.labels)
    assert on_own < np.log(ARGS.vocab_size) - 1.0   # it learnt its task
    assert on_shifted > on_own + 0.3                 # and does badly on the shifted one
