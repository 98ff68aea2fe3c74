"""Persona space inside the model: activations per layer, directions, projections.

* :func:`collect`: mean residual-stream activations per decoder layer over an
  answer's tokens (or at the prompt's last token) for probes, sample sets or
  datasets, under any condition, resumable into a run folder
  (:class:`ActivationSet`).
* :func:`persona_vector` (a trait's system prompt against its opposite),
  :func:`adapter_shift` (what an adapter does to the activations) and
  :func:`difference` (any two sets) give a :class:`Direction`: a vector per layer,
  each layer's separation, and the layer chosen by it.
* :func:`project` puts each row of an activation set on a direction;
  :func:`shift_along` says how far adapters move the model along directions (an
  interval over questions and training seeds, adjusted p-values), and
  :func:`sample_projections` gives each sampled text's projection keyed to join a
  basin map's frame.
* :func:`data_projection`: a training set's answers against the model's own
  answers to the same prompts, along directions, before any training;
  :func:`correlate` sets such figures against trained shifts (one pair per dataset).
* Steering (:class:`persona_space.Steer`) is a condition like an adapter: pass it
  in ``adapters=`` to :func:`collect`, ``sample``, ``identity_shift`` and the rest.
* :func:`drift`: each turn of sampled conversations projected on directions.
* :func:`assistant_axis`: the default assistant against the bundled :func:`roles`
  (59 role prompts), the axis and each role's place in persona space (PCA)
  (:class:`PersonaSpace`; :meth:`PersonaSpace.place` adds adapters to it).
"""

from persona_space.activations._axis import ASSISTANT, PersonaSpace, Role, assistant_axis, roles
from persona_space.activations._collect import (
    ActivationSet,
    ActivationSpec,
    Item,
    collect,
)
from persona_space.activations._directions import (
    CRITERION,
    Direction,
    adapter_shift,
    choose_layer,
    cosine,
    difference,
    persona_vector,
    project,
    separation,
)
from persona_space.activations._drift import DRIFT_KEYS, drift, turn_items
from persona_space.activations._projections import (
    SAMPLE_KEYS,
    correlate,
    data_projection,
    sample_projections,
    shift_along,
)

__all__ = [
    "ASSISTANT",
    "CRITERION",
    "DRIFT_KEYS",
    "SAMPLE_KEYS",
    "ActivationSet",
    "ActivationSpec",
    "Direction",
    "Item",
    "PersonaSpace",
    "Role",
    "adapter_shift",
    "assistant_axis",
    "choose_layer",
    "collect",
    "correlate",
    "cosine",
    "data_projection",
    "difference",
    "drift",
    "persona_vector",
    "project",
    "roles",
    "sample_projections",
    "separation",
    "shift_along",
    "turn_items",
]
