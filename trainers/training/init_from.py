"""`hccr-train --init-from RUN_OR_MODEL`: a new run starts from a trained model's weights.

    message = init_from.start_from(model, charset, "runs/pretrain")
    # "init-from runs/pretrain/best.keras: 158 layers copied, head: 21 of 21 classes matched,
    #  0 new"

RUN_OR_MODEL is a training workdir (its `best.keras`, the model selected by the run's monitor;
`final.keras` when there is no best.keras) or a `.keras` file. Its charset is the
`charset.txt` next to the model: the trainer writes one into every workdir, hccr-export into
every export directory; a bare `.keras` file needs one beside it.

What is copied (`transfer`): every layer with weights, matched by name, whose weights have the
same shapes here and in the source (BatchNorm statistics included); any other difference is a
different architecture and is refused. The classification head (the Dense layer named
`logits` that every model in `models/` ends with) is matched class by class through the two
charsets: a character both know gets its column of the kernel and its bias from the source,
a new character keeps its fresh initialisation, and characters only the source knows are
dropped. For a CRNN the CTC blank (class 0, `models.ctc`) is copied too and character i is
column i + 1 in both models.

A run that resumes from its own checkpoint ignores --init-from: the checkpoint holds newer
weights than the source ever had.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

import keras
import numpy as np

from beam_preprocess.contract import fileio
from beam_preprocess.contract.charset import Charset

HEAD = "logits"  # the name of every model's classification layer (models/)
CHARSET_FILE = "charset.txt"
RUN_MODELS = ("best.keras", "final.keras")  # a workdir's model, first found


class InitFromError(ValueError):
    """--init-from cannot start this run from that model (one line saying why)."""


@dataclasses.dataclass(frozen=True)
class Transfer:
    """What `transfer` copied: layers besides the head, and the head's classes."""
    layers_copied: int
    classes: int  # of this model's charset
    classes_matched: int  # found in the source charset: their head columns copied
    source_only: int  # characters of the source charset this model does not have

    def describe(self) -> str:
        return (f"{self.layers_copied} layers copied, head: {self.classes_matched} of "
                f"{self.classes} classes matched, {self.classes - self.classes_matched} new"
                + (f" ({self.source_only} of the source's classes unused)"
                   if self.source_only else ""))


def _blank_offset(head: keras.layers.Layer) -> int:
    """1 for a CTC model (outputs per time step, class 0 the blank), 0 for a classifier."""
    return 1 if len(head.output.shape) == 3 else 0


def _head(model: keras.Model, where: str) -> keras.layers.Layer:
    try:
        head = model.get_layer(HEAD)
    except ValueError:
        raise InitFromError(f"{where}: model {model.name!r} has no classification layer named "
                            f"{HEAD!r} (not a models/ architecture)") from None
    if not isinstance(head, keras.layers.Dense):
        raise InitFromError(f"{where}: layer {HEAD!r} of model {model.name!r} is a "
                            f"{type(head).__name__}, not a Dense classification layer")
    return head


def _shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]


def transfer(model: keras.Model, charset: Charset, source: keras.Model,
             source_charset: Charset, *, where: str = "init-from") -> Transfer:
    """Copies `source`'s weights into `model` (built, same architecture), the head class by
    class through the two charsets (see the module docstring).

    Args:
      model: the new run's model; its head has `len(charset)` classes (+1: CTC blank).
      charset: the new run's classes, in class order.
      source: the trained model.
      source_charset: the classes `source` was trained on.
      where: how error messages name the source.

    Returns:
      The counts (`Transfer.describe()` is one line for the log).

    Raises:
      InitFromError: the architectures differ outside the head (a layer missing on one side,
        or weights of other shapes), a classifier meets a CRNN, or a charset does not fit its
        model's head; `model` is left untouched.
    """
    head, source_head = _head(model, "this run"), _head(source, where)
    offset = _blank_offset(head)
    if _blank_offset(source_head) != offset:
        kinds = {0: "a classifier", 1: "a CRNN (CTC)"}
        raise InitFromError(f"{where}: the source is {kinds[1 - offset]}, this run trains "
                            f"{kinds[offset]}")
    for what, m, h, cs in (("this run's", model, head, charset),
                           (f"{where}:", source, source_head, source_charset)):
        if h.units != len(cs) + offset:
            raise InitFromError(f"{what} model {m.name!r} has {h.units} classes in layer "
                                f"{HEAD!r} but its charset has {len(cs)} characters"
                                + (" (+1 CTC blank)" if offset else ""))

    # === Layers besides the head: the same names and shapes, or refuse ===
    ours = {layer.name: layer for layer in model.layers if layer.weights and layer is not head}
    theirs = {layer.name: layer for layer in source.layers
              if layer.weights and layer is not source_head}
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing or extra:
        names = ", ".join([f"{n!r} only here" for n in missing[:3]]
                          + [f"{n!r} only in the source" for n in extra[:3]])
        raise InitFromError(f"{where}: a different architecture than this run's "
                            f"{model.name!r} (layers {names}); use the source run's --config "
                            f"and model settings")
    for name, layer in ours.items():
        if _shapes(layer) != _shapes(theirs[name]):
            raise InitFromError(f"{where}: a different architecture than this run's "
                                f"{model.name!r}: layer {name!r} has weights "
                                f"{_shapes(theirs[name])} in the source, {_shapes(layer)} "
                                f"here; use the source run's --config and model settings")
    kernel, bias = (np.array(w) for w in head.get_weights())
    source_kernel, source_bias = source_head.get_weights()
    if kernel.shape[0] != source_kernel.shape[0]:
        raise InitFromError(f"{where}: a different architecture than this run's "
                            f"{model.name!r}: layer {HEAD!r} reads {source_kernel.shape[0]} "
                            f"features in the source, {kernel.shape[0]} here")

    # === The head, class by class ===
    pairs = [(i, source_charset.index(c)) for i, c in enumerate(charset.chars)
             if c in source_charset]
    columns = np.array([i + offset for i, _ in pairs] + list(range(offset)), dtype=int)
    source_columns = np.array([j + offset for _, j in pairs] + list(range(offset)), dtype=int)
    kernel[:, columns] = source_kernel[:, source_columns]
    bias[columns] = source_bias[source_columns]

    for name, layer in ours.items():
        layer.set_weights(theirs[name].get_weights())
    head.set_weights([kernel, bias])
    return Transfer(layers_copied=len(ours), classes=len(charset), classes_matched=len(pairs),
                    source_only=len(source_charset) - len(pairs))


def locate(run_or_model: str) -> tuple[str, str]:
    """The model file and the charset file of `run_or_model` (a workdir or a .keras file).

    Raises:
      InitFromError: nothing there, a workdir without best.keras / final.keras, another kind
        of file, or no charset.txt next to the model.
    """
    from beam_preprocess.contract.tfio import gfile
    fs = gfile()
    if fs.isdir(run_or_model):
        models = [fileio.join(run_or_model, name) for name in RUN_MODELS]
        found = [path for path in models if fs.exists(path)]
        if not found:
            raise InitFromError(f"--init-from {run_or_model}: a directory without "
                                f"{' or '.join(RUN_MODELS)} (not a finished training workdir)")
        model_path = found[0]
    elif not fs.exists(run_or_model):
        raise InitFromError(f"--init-from {run_or_model}: no such file or directory")
    elif not run_or_model.endswith(".keras"):
        raise InitFromError(f"--init-from {run_or_model}: neither a training workdir nor a "
                            f".keras file")
    else:
        model_path = run_or_model
    directory = model_path.rsplit("/", 1)[0] if fileio.has_scheme(model_path) else \
        os.path.dirname(model_path)
    charset_path = fileio.join(directory, CHARSET_FILE)
    if not fs.exists(charset_path):
        raise InitFromError(f"--init-from {run_or_model}: no {charset_path} next to "
                            f"{model_path}: the classes the model was trained on (a training "
                            f"workdir and an export directory hold one)")
    return model_path, charset_path


def _load_model(path: str) -> keras.Model:
    from trainers.serving import inference  # one-line errors for damaged archives
    if not fileio.has_scheme(path):
        return inference.KerasRunner(path).model
    from beam_preprocess.contract.tfio import gfile
    with tempfile.TemporaryDirectory() as tmp:  # Keras reads local files only
        local = os.path.join(tmp, os.path.basename(path))
        gfile().copy(path, local)
        return inference.KerasRunner(local).model


def check_source(run_or_model: str, charset: Charset | None) -> tuple[str, str]:
    """Refuses a source that `start_from` would refuse before reading its model: nothing
    there, no charset next to it, or training data without a charset (mnist). Called before
    the run writes anything to its workdir.

    Returns:
      `locate`'s `(model path, charset path)`.

    Raises:
      InitFromError: see `locate`.
    """
    if charset is None:
        raise InitFromError(f"--init-from {run_or_model}: the training data has no charset "
                            f"to match the classes by (dataset 'mnist')")
    return locate(run_or_model)


def start_from(model: keras.Model, charset: Charset | None, run_or_model: str, *,
               resumed_step: int = 0) -> str:
    """Initialises `model` from `run_or_model` (see the module docstring) unless the run
    resumed from its own checkpoint; returns one line for the log.

    Raises:
      InitFromError: see `locate` and `transfer`; also data without a charset (mnist).
    """
    if resumed_step:
        return (f"--init-from {run_or_model} ignored: resuming from this workdir's checkpoint "
                f"(step {resumed_step}); --restart starts over from {run_or_model}")
    model_path, charset_path = check_source(run_or_model, charset)
    source_charset = Charset.load(charset_path)
    source = _load_model(model_path)
    result = transfer(model, charset, source, source_charset, where=f"--init-from {model_path}")
    return f"init-from {model_path}: {result.describe()}"
