"""Small pieces every tfprune package shares, written once (private).

* ``layers``: the one walk over a model's layers.
* ``keras_internals``: the one place that touches Keras private attributes.
* ``files``: the one atomic file write.
* ``text``: text tables, the first line of an error, short name lists.
"""
