"""Reference program: a small CNN on scikit-learn's 8x8 handwritten digits.

Hand-written to the Zehanx program contract (docs/program_contract.md): reads the train and
validation splits from $ZX_DATA, reports through zxrt, saves safetensors into $ZX_OUTPUT.
ZX_SMOKE=1 runs three batches. Under torchrun every process trains on its shard (DDP) and rank 0
reports and saves.

    ZX_DATA=path/to/dataset python train.py
"""

import json
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
import zxrt
from model import SmallCNN, images_to_tensor, read_jsonl
from torch.nn.parallel import DistributedDataParallel

# -- configuration ----------------------------------------------------------------------------
BATCH_SIZE = 64
EPOCHS = 30
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
CHANNELS = 32
SMOKE_BATCHES = 3  # with ZX_SMOKE=1: this many batches, then save and stop

cfg = zxrt.env()
torch.manual_seed(cfg.seed)
distributed = cfg.world_size > 1
if distributed:
    dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
device = torch.device(f"cuda:{cfg.local_rank}" if cfg.device == "cuda" else "cpu")
if device.type == "cuda":
    torch.cuda.set_device(device)

# -- data -------------------------------------------------------------------------------------
zxrt.phase("data_loading")
schema = json.loads((cfg.data_dir / "schema.json").read_text())
target = schema["target"]
image = schema["image"]  # {"column": "image", "shape": [8, 8], "value_range": [0, 16], ...}
scale = float(image["value_range"][1]) or 1.0
train_rows = read_jsonl(cfg.data_dir / "train.jsonl")
val_rows = read_jsonl(cfg.data_dir / "validation.jsonl")
# Class order is fixed by the schema when it lists the classes, so predict.py maps back the same way.
classes = [str(c) for c in (schema.get("classes") or sorted({str(r[target]) for r in train_rows}))]
index_of = {label: i for i, label in enumerate(classes)}


def tensors(rows):
    x = images_to_tensor([r[image["column"]] for r in rows], image["shape"], scale)
    y = torch.tensor([index_of[str(r[target])] for r in rows])
    return x, y


x_train, y_train = tensors(train_rows)
x_val, y_val = tensors(val_rows)
x_val, y_val = x_val.to(device), y_val.to(device)

# -- model ------------------------------------------------------------------------------------
zxrt.phase("model_building")
height, width = image["shape"]
model = SmallCNN(len(classes), height, width, channels=CHANNELS).to(device)
net = (
    DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if distributed
    else model
)
optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
steps_per_epoch = math.ceil(len(x_train) / (BATCH_SIZE * cfg.world_size))
total_steps = SMOKE_BATCHES if cfg.smoke else EPOCHS * steps_per_epoch
# One-cycle schedule: warm up, then anneal; it trains this small net fast and stably.
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=total_steps)


def evaluate() -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(x_val).argmax(dim=1) == y_val).sum().item()
    model.train()
    return correct / len(y_val)


# -- training ---------------------------------------------------------------------------------
zxrt.phase("training")
started = time.monotonic()
step = 0
generator = torch.Generator().manual_seed(cfg.seed)
for epoch in range(EPOCHS):
    # Each process takes its own slice of the same shuffled order.
    order = torch.randperm(len(x_train), generator=generator)[cfg.rank :: cfg.world_size]
    for start in range(0, len(order), BATCH_SIZE):
        batch = order[start : start + BATCH_SIZE]
        xb, yb = x_train[batch].to(device), y_train[batch].to(device)
        tick = time.monotonic()
        loss = F.cross_entropy(net(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        elapsed = time.monotonic() - started
        zxrt.log_metrics(
            step,
            epoch=epoch,
            loss=loss.item(),
            lr=scheduler.get_last_lr()[0],
            samples_per_s=len(batch) * cfg.world_size / max(time.monotonic() - tick, 1e-9),
            eta_s=elapsed / step * (total_steps - step),
            total_steps=total_steps,
        )
        if step >= total_steps:
            break
    if step >= total_steps or cfg.smoke:
        break
    zxrt.phase("validation")
    zxrt.log_metrics(step, epoch=epoch + 1, val={"accuracy": evaluate()})
    zxrt.phase("training")
    # Stop early rather than be killed when the platform's time budget is nearly spent.
    if cfg.time_budget_s and time.monotonic() - started > 0.8 * cfg.time_budget_s:
        zxrt.log(f"stopping after epoch {epoch + 1}: time budget nearly spent", level="warning")
        break

# -- saving -----------------------------------------------------------------------------------
accuracy = evaluate()
zxrt.report_final({"accuracy": accuracy})
zxrt.save_model(
    model,
    {
        "classes": classes,
        "height": height,
        "width": width,
        "channels": CHANNELS,
        "scale": scale,
        "image_column": image["column"],
    },
)
if distributed:
    dist.destroy_process_group()
