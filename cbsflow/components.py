"""Import every module that registers components, so all of them are known to gin and `--list`."""

import cbsflow.adaptation  # noqa: F401
import cbsflow.autoencoders  # noqa: F401
import cbsflow.backbones.mlp  # noqa: F401
import cbsflow.data.toy  # noqa: F401
import cbsflow.estimators  # noqa: F401
import cbsflow.metrics.sample_distances  # noqa: F401
import cbsflow.monitors  # noqa: F401
import cbsflow.partition  # noqa: F401
import cbsflow.paths  # noqa: F401
import cbsflow.samplers  # noqa: F401
import cbsflow.smoothing  # noqa: F401
import cbsflow.stages  # noqa: F401
import cbsflow.timesampling  # noqa: F401
import cbsflow.backbones.jit  # noqa: F401
import cbsflow.backbones.sit  # noqa: F401
import cbsflow.backbones.unet  # noqa: F401
import cbsflow.data.shards  # noqa: F401
import cbsflow.metrics.classifier  # noqa: F401
import cbsflow.metrics.fidelity  # noqa: F401
import cbsflow.metrics.likelihood  # noqa: F401
import cbsflow.affinity  # noqa: F401
import cbsflow.budget  # noqa: F401
import cbsflow.clustering  # noqa: F401
import cbsflow.progressive  # noqa: F401
import cbsflow.weighting  # noqa: F401
