"""Physical channel removal for Keras 3 models: smaller layers, same architecture.

``remove_channels(model, {layer_name: [indices]})`` follows the graph from each producer
(Conv, Dense, ...) through BatchNormalization, activations, pooling and DepthwiseConv to
every consumer, cuts coupled groups (residual Add and other merges) together and maps
Concatenate offsets and Flatten positions. ``coupled_groups(model)`` shows which layers
are tied together and which channels can be removed.

Layers a cut passes through: Conv1D/2D/3D (groups=1), Conv*Transpose, SeparableConv1D/2D,
Dense, DepthwiseConv1D/2D, BatchNormalization, PReLU, activations, dropout and noise,
pooling and global pooling, padding, cropping, up-sampling, Flatten, Reshape (keeping the
last axis, or flattening), scalar Rescaling, Add/Subtract/Multiply/Average/Maximum/Minimum
(coupled), Concatenate; channels_last only. ``keras.ops`` calls in a Functional graph
(``x + y``, ``x * 2.0``, ``x[:, 0]``, ``ops.mean(x, axis=1)``, ``ops.reshape``, ...) are
followed too: element-wise ops between tensors couple them like Add, with a scalar they pass
the channels through, and shape ops that keep the channel axis last carry the cut. Anything
else (LayerNormalization, attention, recurrent layers, grouped convolutions, ops over the
channel axis, unknown ops, shared layers, nested models, layers that own layers) is copied
unchanged, and a cut whose channels would flow into it is refused with an error naming it.
Subclassed models (no readable graph) are refused. A custom layer is cut once
``register_layer(layer_class, family)`` tells how (subclass ``LayerFamily``); a custom
operation once ``register_operation(op_class, family)`` does (subclass ``OpFamily``).

``compact_embeddings(model)`` stores only the nonzero rows of Embedding tables (after whole
rows were pruned), with outputs unchanged.

Example:

```python
import tfprune

print(tfprune.surgery.coupled_groups(model))
smaller = tfprune.surgery.remove_channels(model, {"conv1": [0, 3, 4]})
```
"""

from tfprune._graph import LayerFamily, OpFamily, StructuredReport, register_layer, register_operation
from tfprune.surgery._embedding import CompactEmbedding, compact_embeddings
from tfprune.surgery._groups import CoupledGroup, coupled_groups
from tfprune.surgery._remove import remove_channels, zero_channels

__all__ = ["CompactEmbedding", "CoupledGroup", "LayerFamily", "OpFamily", "StructuredReport", "compact_embeddings", "coupled_groups",
           "register_layer", "register_operation", "remove_channels", "zero_channels"]
