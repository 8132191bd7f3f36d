"""Worker of test_multi_worker.py: the same trainings under MultiWorkerMirroredStrategy or on one device.

    python _multiworker_worker.py OUTDIR worker INDEX PORT0 PORT1
        one of two workers of a TF_CONFIG cluster on 127.0.0.1 (one CPU replica each, global batch split in two);
    python _multiworker_worker.py OUTDIR single
        the reference: one process, no strategy, the same global batches.

"plain" (a keras.Model with no technique) is the control: it shows how far the two sums of half-batch gradients
drift from the full-batch gradient on their own.

Each case trains a fresh model (Adam, 3 epochs of 16 global batches of 32, no shuffling) and writes
OUTDIR/<mode><index>_<case>.npz (final weights) and OUTDIR/<mode><index>.json (what the callbacks did).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

EPOCHS = 3
CASES = (
    "plain",
    "weight_normalization_init",
    "loss_noise_gradient_dropout",
    "sewa",
    "optimum_shifting",
    "all_together",
)


def work_around_keras_multi_worker_fit():
    """Patches two places where Keras 3's `fit` fails under MultiWorkerMirroredStrategy (test-only, Keras 3.15).

    1. `TensorFlowTrainer._maybe_symbolic_build` reduces the first input batch with `strategy.reduce(...)` on the
       `(x, y)` tuple of PerReplica values, which the multi-worker strategy tries to convert to one tensor ("Attempt
       to convert a value (PerReplica...)"; keras-team/keras#20585, tensorflow/tensorflow#72388). The batch only
       gives the model its input structure, so the local replica's part is passed instead.
    2. `reduce_per_replica(..., "auto")` of the step's logs runs `strategy.reduce("MEAN", v, axis=0)` on scalar
       metric values in multi-worker mode ("Invalid reduction dimension 0 for input with 0 dimensions"); they are
       averaged over the replicas with `axis=None` instead.

    Neither touches the training step itself (forward, loss, gradient all-reduce, optimizer update).
    """
    import keras
    from keras.src.backend.tensorflow import trainer

    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce_per_replica = trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            local = self.distribute_strategy.experimental_local_results
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(lambda value: local(value)[0], next(batches))
                break
        return symbolic_build(self, iterator=None, data_batch=data_batch)

    def _reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return keras.tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _reduce_per_replica


def dataset(tf, data):
    """The global batches, in order; under the strategy each worker takes its half of each (DATA sharding)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    batches = tf.data.Dataset.from_tensor_slices(data).batch(_common.BATCH_SIZE, drop_remainder=True)
    return batches.with_options(options)


def train(case, tf, data, scope):
    import keras

    from keras_wtrain.callbacks import OptimumShifting
    from keras_wtrain.callbacks import SeWA
    from keras_wtrain.callbacks import WeightNormalizationInitializer

    keras.utils.set_random_seed(0)
    everything = case == "all_together"
    randomness = (
        dict(loss_noise=0.3, gradient_dropout=0.1) if case == "loss_noise_gradient_dropout" or everything else {}
    )
    with scope():
        model = _common.build_model(
            weight_normalization=case == "weight_normalization_init" or everything, **randomness
        )
        _common.compile_model(model)
    callbacks = []
    if case == "weight_normalization_init" or everything:
        callbacks.append(WeightNormalizationInitializer(data[0], batch_size=256))
    if case == "optimum_shifting" or everything:
        callbacks.append(OptimumShifting(data=data, seed=0, max_loss_increase=0.1))
    if case == "sewa" or everything:
        sewa = SeWA(
            k=4,
            num_checkpoints=8,
            every_n_steps=2,
            selection_data=data,
            selection_size=256,
            selection_steps=4,
            num_random_subsets=4,
            max_evaluations=4,
            seed=0,
        )
        callbacks.append(sewa)
    model.fit(dataset(tf, data), epochs=EPOCHS, verbose=0, callbacks=callbacks)
    info = {"final_step": int(model.optimizer.iterations.numpy())}
    for callback in callbacks:
        if isinstance(callback, SeWA):
            info["selected_steps"] = [int(s) for s in callback.selected_steps]
        if isinstance(callback, OptimumShifting):
            info["shifts"] = [[str(entry["epoch"]), bool(entry["kept"])] for entry in callback.history]
        if isinstance(callback, WeightNormalizationInitializer):
            info["initialized_layers"] = int(callback.initialized_layers)
    return model, info


def main(argv):
    _common.guard_worker()
    outdir, mode = argv[0], argv[1]
    if mode == "worker":
        index, ports = int(argv[2]), argv[3:5]
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        # Collective ops block a thread each while they wait for the peer: give the runtime two.
        tf = _common.configure_tensorflow(inter_op_threads=2)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        work_around_keras_multi_worker_fit()
        scope, name = strategy.scope, f"worker{index}"
    elif mode == "single":
        tf = _common.configure_tensorflow(inter_op_threads=2)
        scope, name = tf.distribute.get_strategy().scope, "single"
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    data = _common.make_data()
    infos = {}
    for case in CASES:
        model, infos[case] = train(case, tf, data, scope)
        _common.save_weights(model, os.path.join(outdir, f"{name}_{case}.npz"))
    _common.write_json(os.path.join(outdir, f"{name}.json"), infos)


if __name__ == "__main__":
    main(sys.argv[1:])
