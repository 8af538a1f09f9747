"""The ``ssd-fast`` command line."""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import torch

from . import outputs
from .engine import config as train_config


def _bench(args):
    from . import bench

    _threads("bench", args)
    if not (math.isfinite(args.min_seconds) and args.min_seconds > 0):
        _error("bench", f"--min-seconds must be a finite number > 0, got {args.min_seconds}")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            _error("bench", "--device cuda: no CUDA device is available")
        devices.remove("cuda")
    if args.inference:
        return _bench_inference(args, devices)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
    if ops:
        known = sorted({case.op for case in bench.all_cases()})
        unknown = [o for o in ops if o not in known]
        if unknown:
            _error("bench", f"--ops: unknown op(s) {', '.join(unknown)}; known: {', '.join(known)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(bench.HEADER)
    for row in bench.run(devices, ops, args.min_seconds):
        print(bench.format_row(row), flush=True)


def _bench_inference(args, devices):
    from .bench import inference as bench_inference

    if devices != ["cpu"]:
        _error("bench", "--inference runs on the CPU: add --device cpu")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        batches = [0]
    if not batches or min(batches) < 1:
        _error("bench", f"--batches must be comma-separated integers >= 1, got {args.batches!r}")
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as e:
        _error("bench", f"--inference needs onnxruntime, onnxscript and torchvision ({e}): "
                        f"pip install 'ssd_fast[onnx,test]'")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {threads} CPU threads; "
          f"ms per call (median), network + tail timed apart")
    print(bench_inference.HEADER)
    rows = bench_inference.run(batches, threads, args.min_seconds)
    for row in rows:
        print(bench_inference.format_row(row), flush=True)
    return rows


# -- demo / train / eval / detect ------------------------------------------------------------

#: The demo's defaults: ssd_tiny at 128 px on the synthetic shapes, sized for 2 CPU cores. Measured
#: at 2400 iterations (VOC07 mAP on 500 test images, one run each, spread ~0.03): AdamW 0.74 where
#: SGD lags far behind; the photometric distortion costs 0.07 here (the objects' colours are random
#: already), expand at p=0.3 gains 0.03; 6 boxes per cell on every map instead of 4/6: -0.01;
#: bfloat16 autocast (where the CPU has it natively) 0.735 at 1.6x the speed; ssd_tiny's stride-4
#: map 0.768; a cosine schedule instead of the step at 80%: 0.722. Workers 0 and 2 threads beat 1
#: worker + 1 thread (137 vs 111 img/s in float32).
DEMO = dict(arch="ssd_tiny", image_size=128, train_n=3000, test_n=500, iterations=3100, batch_size=32,
            optimizer="adamw", lr=4e-3, expand_p=0.3, photometric=False, workers=0)


#: What a training run writes into its --out folder (the demo adds detections.png).
RUN_FILES = ("checkpoint.pt", "model.pt", "log.jsonl", "metrics.json")


def _error(command, message, status=2):
    """A user's mistake: one line naming the argument and what is wrong; exit status 2."""
    print(f"ssd-fast {command}: {message}", file=sys.stderr)
    raise SystemExit(status)


def _train_config(args):
    """The TrainConfig of the train flags (:mod:`ssd_fast.engine.config`), refused before
    anything is built: a value out of its field's range, one line naming the flag."""
    values = {f.name: _flag_value(f, getattr(args, f.name)) for f in train_config.flags()}
    try:
        cfg = train_config.TrainConfig(**values, progress=not args.quiet)
    except train_config.ConfigError as e:
        field = train_config.field(e.field)
        _error("train", f"{field.metadata['flag']} must be {field.metadata['check'].requirement()}, "
                        f"got {getattr(args, e.field)!r}")
    if args.image_size is not None and args.image_size <= 0:
        _error("train", f"--image-size must be > 0, got {args.image_size}")
    if args.milestones:
        cfg = dataclasses.replace(cfg, milestones=_milestones(args.milestones, cfg.iterations))
    return cfg


def _milestones(text, iterations):
    """``--milestones`` as increasing iterations in 1..``iterations`` (the API lets a schedule
    reach beyond a run; on the command line that is a mistake)."""
    try:
        milestones = [int(m) for m in text.split(",") if m.strip()]
    except ValueError:
        _error("train", f"--milestones must be comma-separated iterations, got {text!r}")
    if any(not 0 < m <= iterations for m in milestones) or milestones != sorted(set(milestones)):
        _error("train", f"--milestones must be increasing iterations in 1..--iterations={iterations}, got {text!r}")
    return milestones


def _flag_value(field, value):
    """The TrainConfig value of a flag's ``value`` (``--amp on``: True)."""
    words = field.metadata["words"]
    return words[value] if words else value


def _add_train_flags(parser):
    """The flags of the TrainConfig fields: flag, default, type or choices, help, all from the field."""
    for f in train_config.flags():
        meta, kw = f.metadata, {"dest": f.name}
        if meta["words"]:
            default = next(word for word, value in meta["words"].items() if value == f.default)
            kw.update(choices=tuple(meta["words"]), default=default)
        elif isinstance(meta["check"], train_config.OneOf):
            kw.update(choices=meta["check"].choices, default=f.default)
        else:
            kw.update(type=type(f.default), default=f.default, metavar=meta["flag"][2:].replace("-", "_").upper())
        rule = f", must be {meta['check'].requirement()}" if isinstance(meta["check"], train_config.Bound) else ""
        parser.add_argument(meta["flag"], help=f"{meta['help']} (default {kw['default']}{rule})", **kw)
    parser.add_argument("--milestones", default="", help=train_config.field("milestones").metadata["help"])


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def cpu_threads(command, threads=0, workers=0) -> int:
    """The CPU thread count: ``--threads`` when given, else ``OMP_NUM_THREADS`` when set, else
    the usable CPUs less one per DataLoader worker (oversubscription halves speed)."""
    if threads:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        first = env.split(",")[0].strip()  # OpenMP's nested list: the outer level
        if not (first.isdigit() and int(first) > 0):
            _error(command, f"OMP_NUM_THREADS must be a positive integer, got {env!r}")
        return int(first)
    return max(1, _usable_cpus() - workers)


def _threads(command, args, workers=0):
    if args.threads < 0:
        _error(command, f"--threads must be >= 0 (0: automatic), got {args.threads}")
    torch.set_num_threads(cpu_threads(command, args.threads, workers))


def _device(command, value):
    """``--device`` checked: a device torch knows, present on this machine."""
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        _error(command, f"--device {value!r} is not a device (cpu, cuda or cuda:N)")
    if device.type not in ("cpu", "cuda"):
        _error(command, f"--device {value!r}: ssd-fast runs on cpu or cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            _error(command, f"--device {value}: no CUDA device is available")
        if device.index is not None and device.index >= count:
            _error(command, f"--device {value}: this machine has {count} CUDA device(s)")
    return value


def _dataset(command, flag, spec, **defaults):
    """The dataset ``spec`` names; a bad spec or a missing or malformed file is the user's mistake."""
    from .data import build_dataset

    try:
        return build_dataset(spec, **defaults)
    except (ValueError, OSError) as e:
        _error(command, f"{flag}: {e}")


def _checkpoint_file(command, flag, path):
    """``path`` is a readable, non-empty file, else an error naming ``flag``."""
    if not os.path.exists(path):
        _error(command, f"{flag} {path!r} does not exist")
    if os.path.isdir(path):
        _error(command, f"{flag} {path!r} is a directory, not a checkpoint file")
    if not os.access(path, os.R_OK):
        _error(command, f"{flag} {path!r} cannot be read (permission denied)")
    if os.path.getsize(path) == 0:
        _error(command, f"{flag} {path!r}: not an ssd_fast checkpoint: the file is empty")


def _load(command, path, device, flag="--checkpoint"):
    from .checkpoint import load_model

    _checkpoint_file(command, flag, path)
    try:
        return load_model(path, device=device)
    except (ValueError, OSError) as e:  # the message starts with the path
        _error(command, f"{flag} {e}")


def _check_output(command, flag, path, inputs=(), folder=False):
    """An output ``path`` that can be written (:func:`ssd_fast.outputs.check_output`: creatable,
    a file, or a folder with ``folder=True``, none of ``inputs``), else one line naming ``flag``."""
    try:
        outputs.check_output(path, inputs, folder=folder)
    except outputs.OutputError as e:
        _error(command, f"{flag} {e}")


def _check_out_dir(command, path, names=(), inputs=()):
    """``--out`` a folder that can be written, none of its outputs ``names`` one of ``inputs``."""
    _check_output(command, "--out", path, inputs, folder=True)
    for name in names:
        _check_output(command, "--out", os.path.join(path, name), inputs)


def _inputs_of(flag, dataset):
    """``(label, path)`` of the files and folders ``dataset`` reads, for :func:`_check_output`."""
    return [(f"{flag}'s {'folder' if os.path.isdir(f) else 'file'}", f) for f in getattr(dataset, "files", ())]


@contextlib.contextmanager
def _held(command, folder):
    """This run's hold on the ``--out`` folder (:func:`ssd_fast.outputs.run_lock`); one line and
    exit status 2 if another run holds it."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(outputs.run_lock(folder))
        except outputs.OutputError as e:
            _error(command, f"--out {e}")
        yield


def _write_json(path, obj):
    outputs.write_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def _detections_picture(model, dataset, path, count=8, score_threshold=0.3):
    from .engine.evaluate import detect_dataset
    from .engine.visualize import draw_detections, grid

    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    _, dets = detect_dataset(model, subset, batch_size=count)
    tiles = [draw_detections(dataset[i][0], *dets[i], classes=model.classes, score_threshold=score_threshold,
                             scale=max(1, 256 // max(dataset[i][0].shape[:2])))
             for i in range(len(dets))]
    picture = grid(tiles)
    outputs.write_atomically(path, lambda f: picture.save(f, format="PNG"))


def _demo(args):
    from .checkpoint import save_checkpoint
    from .data.synthetic import CLASSES
    from .engine import TrainConfig, Trainer, evaluate, native_bf16
    from .models import build_model

    d = DEMO
    start = time.perf_counter()
    for flag, value in (("--iterations", args.iterations), ("--train-n", args.train_n), ("--test-n", args.test_n)):
        if value < 0:
            _error("demo", f"{flag} must be >= 0 (0: the default), got {value}")
    if 0 < args.train_n < d["batch_size"]:
        _error("demo", f"--train-n must be at least the batch size {d['batch_size']}, got {args.train_n}")
    if args.seed < 0:
        _error("demo", f"--seed must be >= 0, got {args.seed}")
    _check_out_dir("demo", args.out, RUN_FILES + ("detections.png",))
    _threads("demo", args, d["workers"])
    iterations = args.iterations or d["iterations"]
    train = _dataset("demo", "--train-n", f"synthetic:seed={args.seed},split=train", n=args.train_n or d["train_n"],
                     size=d["image_size"]).cache()
    test = _dataset("demo", "--test-n", f"synthetic:seed={args.seed},split=test", n=args.test_n or d["test_n"],
                    size=d["image_size"])
    torch.manual_seed(args.seed)
    model = build_model(d["arch"], num_classes=len(CLASSES), image_size=d["image_size"], classes=CLASSES)
    recipe = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    cfg = TrainConfig(**{**recipe, "iterations": iterations}, warmup_iters=min(100, iterations // 10),
                      milestones=(int(iterations * 0.8),), checkpoint_every=iterations,  # at the end only
                      seed=args.seed, progress=not args.quiet, amp=native_bf16())
    with _held("demo", args.out):
        print(f"ssd-fast demo: {d['arch']} {d['image_size']}px, {len(train)} synthetic training images, "
              f"{iterations} iterations of {cfg.batch_size} on {torch.get_num_threads()} thread(s) + "
              f"{cfg.workers} loader worker(s){', bfloat16 autocast' if cfg.amp else ''} -> {args.out}", flush=True)
        last = Trainer(model, train, cfg, out_dir=args.out).train()
        train_s = time.perf_counter() - start
        model.eval()
        metrics = evaluate(model, test)
        metrics.update(train_seconds=train_s, total_seconds=time.perf_counter() - start,
                       final_loss=last.get("loss"), test_data=repr(test), train_data=repr(train))
        save_checkpoint(os.path.join(args.out, "model.pt"), model, metrics=metrics)
        _write_json(os.path.join(args.out, "metrics.json"), metrics)
        _detections_picture(model, test, os.path.join(args.out, "detections.png"))
        metrics["total_seconds"] = time.perf_counter() - start
        _write_json(os.path.join(args.out, "metrics.json"), metrics)
        print(f"VOC07 mAP@0.5 {metrics['voc07_map50']:.4f}, VOC12 mAP@0.5 {metrics['voc12_map50']:.4f} on "
              f"{metrics['images']} test images; {metrics['total_seconds']:.0f} s in all. Wrote "
              f"{args.out}/model.pt, metrics.json, detections.png")
        return metrics


def _train(args):
    from .checkpoint import load_training_checkpoint, model_from_checkpoint, save_checkpoint
    from .engine import NonFiniteTraining, Trainer, evaluate, init_from_env, is_main
    from .engine.train import batch_size_problem
    from .models import build_model

    cfg = _train_config(args)
    _check_out_dir("train", args.out)
    device = init_from_env(_device("train", args.device))
    _threads("train", args, args.workers)
    dataset = _dataset("train", "--data", args.data)
    if len(dataset) == 0:
        _error("train", f"--data {args.data!r} has no images")
    eval_data = _dataset("train", "--eval-data", args.eval_data) if args.eval_data else None  # before training
    classes = list(dataset.classes)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.batch_size * world > len(dataset):
        _error("train", f"--batch-size {args.batch_size}" + (f" x {world} processes" if world > 1 else "")
               + f" is larger than the dataset ({len(dataset)} images, --data {args.data})")
    if args.resume:
        _checkpoint_file("train", "--resume", args.resume)
        try:  # read once: the Trainer restores from this dict
            ckpt = load_training_checkpoint(args.resume, len(classes), against=f"--data {args.data!r}")
            model = model_from_checkpoint(ckpt, args.resume)
        except (ValueError, OSError) as e:  # the message starts with the path
            _error("train", f"--resume {e}")
        config = ckpt["config"]
        if args.arch is not None and args.arch != config["arch"]:
            _error("train", f"--arch {args.arch} differs from the checkpoint's {config['arch']} "
                            f"(--resume {args.resume})")
        if args.image_size is not None and args.image_size != model.image_size[0]:
            _error("train", f"--image-size {args.image_size} differs from the checkpoint's "
                            f"{model.image_size[0]} (--resume {args.resume})")
    else:
        arch = args.arch or train_config.TRAIN_ARCH
        kw = {"image_size": args.image_size or train_config.TRAIN_IMAGE_SIZE} if arch in ("ssdlite", "ssd_tiny") else {}
        from .models import MODELS

        if arch not in MODELS:
            _error("train", f"--arch {arch!r}: unknown model; known: {', '.join(sorted(MODELS))}")
        torch.manual_seed(args.seed)
        try:
            model = build_model(arch, num_classes=len(classes), classes=classes, **kw)
        except ValueError as e:  # the builder's own range checks (image_size >= 32, ...)
            flag = f"--image-size {kw['image_size']}" if "image_size" in str(e) else f"--arch {arch}"
            _error("train", f"{flag}: {e}")
    problem = batch_size_problem(model, args.batch_size)
    if problem is not None:
        _error("train", f"--batch-size {args.batch_size}: {problem}")
    inputs = _inputs_of("--data", dataset) + (_inputs_of("--eval-data", eval_data) if eval_data else [])
    _check_out_dir("train", args.out, RUN_FILES, inputs)
    with _held("train", args.out) if is_main() else contextlib.nullcontext():
        try:
            trainer = Trainer(model, dataset, cfg, out_dir=args.out, device=device)
            if args.resume:
                trainer.restore(ckpt)
                del ckpt
            trainer.train()
        except NonFiniteTraining as e:  # no model.pt: the last checkpoint is the last good state
            _error("train", str(e), status=1)
        if is_main():
            save_checkpoint(os.path.join(args.out, "model.pt"), model)
            print(f"wrote {args.out}/model.pt and {args.out}/checkpoint.pt")
        if eval_data is not None:
            metrics = evaluate(model.eval(), eval_data, device=device)
            if is_main():
                _write_json(os.path.join(args.out, "metrics.json"), metrics)
                print(f"VOC07 mAP@0.5 {metrics['voc07_map50']:.4f} on {args.eval_data}")


def _eval(args):
    from .engine import evaluate, init_from_env, is_main

    if args.batch_size <= 0:
        _error("eval", f"--batch-size must be > 0, got {args.batch_size}")
    device = init_from_env(_device("eval", args.device))
    _threads("eval", args)
    model = _load("eval", args.checkpoint, device)
    dataset = _dataset("eval", "--data", args.data)
    if len(dataset) == 0:
        _error("eval", f"--data {args.data!r} has no images")
    if args.json:
        inputs = [("the checkpoint", args.checkpoint)] + _inputs_of("--data", dataset)
        _check_output("eval", "--json", args.json, inputs)
    if len(dataset.classes) != model.num_classes:
        _error("eval", f"--checkpoint {args.checkpoint!r} has num_classes={model.num_classes}, "
                       f"--data {args.data!r} has {len(dataset.classes)} (background included)")
    metrics = evaluate(model, dataset, batch_size=args.batch_size, device=device, coco=args.coco)
    if is_main():
        print(f"VOC07 mAP@0.5 {metrics['voc07_map50']:.4f}  VOC12 mAP@0.5 {metrics['voc12_map50']:.4f}"
              + (f"  COCO AP {metrics['coco_ap']:.4f}  AP50 {metrics['coco_ap50']:.4f}" if args.coco else "")
              + f"  ({metrics['images']} images, {metrics['seconds']:.1f} s)")
        if args.json:
            _write_json(args.json, metrics)
    return metrics


def _detect_outputs(images, out, checkpoint):
    """The output file of each input, checked before anything is read or written: ``--out`` is
    a file for one image, a folder for several (or when it is one, or ends with a slash);
    without it each picture goes next to its image as ``NAME_detections.png``. No output may
    be an input (an image or the checkpoint; a symlink or hard link to one included), nor two
    outputs the same file, and each must be one that can be written."""
    from PIL import Image

    for path in images:
        if not os.path.exists(path):
            _error("detect", f"image {path!r} does not exist")
        if not os.path.isfile(path):
            _error("detect", f"image {path!r} is not a file")
    folder = None
    if out and (len(images) > 1 or out.endswith(("/", os.sep)) or os.path.isdir(out)):
        folder = out
        if os.path.exists(folder) and not os.path.isdir(folder):
            _error("detect", f"--out {out!r} is a file; {len(images)} images need a folder")
    pictures = []
    for path in images:
        if out and folder is None:
            pictures.append(out)
        else:
            name = os.path.splitext(os.path.basename(path))[0] + "_detections.png"
            pictures.append(os.path.join(folder if folder is not None else os.path.dirname(path), name))
    if out and folder is None:
        ext = os.path.splitext(out)[1].lower()
        if Image.registered_extensions().get(ext) not in Image.SAVE:
            _error("detect", f"--out {out!r}: cannot write a {ext or 'extensionless'} picture; "
                             f"give a .png or .jpg name, or a folder ending with /")
    elif folder is not None:
        _check_out_dir("detect", folder)
    for i, target in enumerate(pictures):
        image = outputs.input_at(target, [(path, path) for path in images])
        if image is not None:
            _error("detect", f"the picture of {images[i]!r} would overwrite the input image {image[1]!r} "
                             f"(as {target!r}); choose another --out")
        earlier = outputs.input_at(target, [(images[j], pictures[j]) for j in range(i)])
        if earlier is not None:
            _error("detect", f"the pictures of {earlier[0]!r} and {images[i]!r} would both be written "
                             f"to {target!r}; give --out a folder per input or rename one")
        _check_output("detect", "--out" if out else "picture", target, [("the checkpoint", checkpoint)])
    return pictures


def _detect(args):
    import numpy as np
    from PIL import Image

    from .data import TestTransform
    from .data.images import read_image
    from .engine.visualize import draw_detections

    if not (math.isfinite(args.score) and 0 <= args.score <= 1):
        _error("detect", f"--score must be a number in [0, 1], got {args.score}")
    pictures = _detect_outputs(args.images, args.out, args.checkpoint)
    for path in args.images:  # the headers now: an unreadable image stops the run before any output
        try:
            Image.open(path).close()
        except Exception as e:  # PIL raises a zoo of errors on what is not an image
            _error("detect", f"image {path!r} cannot be read as an image ({type(e).__name__}: {e})")
    _threads("detect", args)
    model = _load("detect", args.checkpoint, _device("detect", args.device))
    for path, out in zip(args.images, pictures):
        try:
            image = read_image(path)
        except ValueError as e:
            _error("detect", f"image {e}")
        h, w = image.shape[:2]
        x, _ = TestTransform(model.image_size[0])(image, {"boxes": np.zeros((0, 4), np.float32)})
        boxes, scores, labels, num = model.detect(x[None].to(args.device))
        n = int(num[0])
        H, W = model.image_size
        boxes = boxes[0, :n].cpu() * torch.tensor([w / W, h / H, w / W, h / H])
        picture = draw_detections(image, boxes.numpy(), scores[0, :n].cpu().numpy(), labels[0, :n].cpu().numpy(),
                                  model.classes, args.score)
        fmt = Image.registered_extensions()[os.path.splitext(out)[1].lower()]
        outputs.write_atomically(out, lambda f: picture.save(f, format=fmt))
        kept = int((scores[0, :n] >= args.score).sum())
        print(f"{path}: {kept} detection(s) with score >= {args.score} -> {out}")
        if args.list:
            names = model.classes or [str(c) for c in range(model.num_classes)]
            for box, score, label in zip(boxes[:kept].tolist(), scores[0, :kept].tolist(), labels[0, :kept].tolist()):
                print(f"  {names[label]:12s} {score:.4f}  " + " ".join(f"{v:7.1f}" for v in box))


def _export(args):
    from .export import OPSETS, to_onnx

    batch = args.batch
    if batch != "dynamic":
        if not batch.isdigit() or int(batch) < 1:
            _error("export", f"--batch must be 'dynamic' or an integer >= 1, got {batch!r}")
        batch = int(batch)
    if args.opset not in OPSETS:
        _error("export", f"--opset {args.opset} is not supported: use {OPSETS.start}..{OPSETS.stop - 1}")
    for flag, value in (("--score", args.score), ("--iou", args.iou)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            _error("export", f"{flag} must be a number in [0, 1], got {value}")
    if args.topk is not None and not (args.topk >= 1 or args.topk == -1):
        _error("export", f"--topk must be >= 1 (or -1: every prior), got {args.topk}")
    if args.max_det is not None and args.max_det < 1:
        _error("export", f"--max-det must be >= 1, got {args.max_det}")
    _checkpoint_file("export", "--checkpoint", args.checkpoint)
    _check_output("export", "--out", args.out, [("the checkpoint", args.checkpoint)])
    if not args.out.lower().endswith(".onnx"):
        _error("export", f"--out {args.out!r}: give a file name ending in .onnx")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        _error("export", f"needs onnx and onnxscript ({e}): pip install 'ssd_fast[onnx]'")
    _threads("export", args)
    model = _load("export", args.checkpoint, "cpu")
    with outputs.writing(args.out):
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    to_onnx(model, args.out, batch=batch, opset=args.opset, score_threshold=args.score,
            iou_threshold=args.iou, topk_per_class=args.topk, max_detections=args.max_det)
    H, W = model.image_size
    print(f"{args.checkpoint} -> {args.out}: ONNX opset {args.opset}, images float32 "
          f"[{'B' if batch == 'dynamic' else batch}, 3, {H}, {W}] (RGB resized to {W}x{H}, (x - mean) / std), "
          f"outputs det_boxes, det_scores, det_labels, num_detections")


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line too (not the usage first): ``ssd-fast train: argument
    --iterations: invalid int value: 'x' (see ssd-fast train --help)``, exit status 2."""

    def error(self, message):
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser():
    p = _Parser(prog="ssd-fast", description="Fast SSD: ops, training, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time the ops against torchvision and the references")
    b.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="where to run (default: all available)")
    b.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    b.add_argument("--min-seconds", type=float, default=0.3,
                   help="time each implementation for at least this long")
    b.add_argument("--inference", action="store_true",
                   help="end-to-end CPU inference instead: SSD.detect vs its ONNX export in onnxruntime vs "
                        "torchvision's SSD300 and SSDLite320")
    b.add_argument("--batches", default="1,8", help="with --inference: batch sizes (default 1,8)")
    b.set_defaults(func=_bench)
    threads_help = ("CPU threads (default: OMP_NUM_THREADS if set, else the CPUs this process may use, "
                    "less one per loader worker)")

    d = sub.add_parser("demo", help="train ssd_tiny on synthetic shapes (CPU, <= 10 min), evaluate, draw")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    d.add_argument("--iterations", type=int, default=0, help=f"default {DEMO['iterations']}")
    d.add_argument("--train-n", type=int, default=0, help=f"training images (default {DEMO['train_n']})")
    d.add_argument("--test-n", type=int, default=0, help=f"test images (default {DEMO['test_n']})")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_demo)

    t = sub.add_parser("train", help="train a model (torchrun for several processes)")
    t.add_argument("--data", required=True, help="dataset spec, e.g. synthetic:seed=0,n=4000 or voc:ROOT,year=2007,split=trainval")
    t.add_argument("--arch", default=None,
                   help=f"ssd_tiny, ssdlite, ssd300_vgg16 or ssd512_vgg16 (default {train_config.TRAIN_ARCH}); with "
                        f"--resume, the checkpoint's")
    t.add_argument("--image-size", type=int, default=None,
                   help=f"input size of ssd_tiny and ssdlite (default {train_config.TRAIN_IMAGE_SIZE}); with "
                        f"--resume, the checkpoint's")
    _add_train_flags(t)
    t.add_argument("--resume", default="", help="a checkpoint.pt to continue from")
    t.add_argument("--out", default="runs/train")
    t.add_argument("--eval-data", default="", help="evaluate on this dataset spec at the end")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="VOC07/VOC12 mAP@0.5 (and COCO AP) of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="dataset spec")
    e.add_argument("--json", default="", help="write the metrics here")
    e.add_argument("--coco", action="store_true", help="also COCO AP (pycocotools)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.set_defaults(func=_eval)

    x = sub.add_parser("detect", help="draw a checkpoint's detections on images (PNG)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("images", nargs="+")
    x.add_argument("--out", default="",
                   help="output picture (one image; .png, .jpg, ...) or folder (several images, an existing "
                        "folder, or a path ending with /); default: NAME_detections.png next to each image")
    x.add_argument("--score", type=float, default=0.3, help="draw detections scoring at least this")
    x.add_argument("--device", default="cpu")
    x.add_argument("--list", action="store_true",
                   help="also print each detection drawn: label, score, box in pixels of the image")
    x.set_defaults(func=_detect)

    o = sub.add_parser("export", help="export a checkpoint, detection tail included, to ONNX")
    o.add_argument("--checkpoint", required=True)
    o.add_argument("--out", required=True, help="the .onnx file")
    o.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    o.add_argument("--opset", type=int, default=18, help="ONNX opset, 18..23 (default 18)")
    o.add_argument("--score", type=float, default=None, help="score threshold (default: the checkpoint's, 0.01)")
    o.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: the checkpoint's, 0.45)")
    o.add_argument("--topk", type=int, default=None, help="candidates per class before NMS (default 400)")
    o.add_argument("--max-det", type=int, default=None, help="detections per image (default 200)")
    o.set_defaults(func=_export)
    for sp in (b, d, t, e, x, o):
        sp.add_argument("--threads", type=int, default=0, help=threads_help)
        sp.set_defaults(parser=sp)
    return p


def main(argv=None):
    """Run ``ssd-fast`` with ``argv``. A user's mistake (a missing or unreadable file, a bad
    value, an output that is an input or cannot be written, an ``--out`` folder another run
    is writing) prints one line naming the argument and exits with status 2, before any work;
    a write the destination refuses during the work (the disk filled up) prints one line
    naming the file and exits with status 1, the file that was there intact. A bug keeps its
    traceback."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # named by the subcommand, as its other errors
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except outputs.OutputError as e:  # the destination refused a write the checks could not foresee
        _error(args.command, str(e), status=1)


def console() -> None:
    """The ``ssd-fast`` console script. ``main`` returns what the subcommand computed (metrics, for
    tests and callers); a console script's return value becomes the exit status, so this one
    returns nothing: exit status 0 on success. Output piped into a reader that stops early
    (``| head``) ends the command quietly, as other command-line tools do."""
    try:
        main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(141) from None  # 128 + SIGPIPE, what a shell reports


if __name__ == "__main__":
    console()
