"""An E(3)-equivariant EGNN (Satorras et al., 2021) whose node updates are relaxable.

The graph is fully connected over a fixed number of particles, so everything is written
densely over ``(batch, N, N)`` pairs: no scatter ops, no data-dependent shapes, which keeps
the model ``torch.jit.trace``-able.

Per layer, with scalar node features ``h_i``, positions ``x_i`` and velocities ``v_i``:

* messages ``m_ij = φ_e(h_i, h_j, ‖x_i − x_j‖², q_i q_j)``;
* ``C`` vector channels per node ``V_ic = mean_j (x_i − x_j) φ_x(m_ij)_c``, plus ``v_i``,
  the gated ``φ_v(h_i) v_i`` (EGNN's velocity term) and the position relative to the
  system's centroid ``x_i − x̄``;
* a :class:`~workers.relax.RelaxedScalarVectorLinear` node update reads the raw node
  features ``[h_i, those C + 3 vectors as xyz components]`` and writes a new velocity and a
  scalar increment: its equivariant part mixes the vectors as whole vectors (the new
  velocity) and the scalars among themselves; its free term ``θ·W`` is dense over all
  ``hidden + 3(C + 3)`` numbers, so relaxed, xyz components mix freely with each other and
  with the scalars in both directions (vector components leak into ``h``, which every later
  message sees);
* ``x_i ← x_i + v_i``, ``h_i ← h_i + φ_h(h_i, mean_j m_ij) + (scalar increment)``.

Every other map sees invariant scalars, so with ``θ = 0`` (or after projection) the model is
exactly E(3)-equivariant. The free term relaxes rotations and reflections only: every
vector it reads is translation-invariant (differences, velocities, centroid-relative
positions; absolute positions are deliberately not read), and it writes a velocity, so even
relaxed the model stays exactly translation-equivariant, a symmetry the dynamics (no walls,
no external field) never break.
"""

from __future__ import annotations

import torch
from torch import nn

from workers.relax import RelaxedScalarVectorLinear, ScalarVectorLinear, export_module


def _mlp(sizes: list[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EGNNLayer(nn.Module):
    """One EGNN message-passing layer with a relaxable node update."""

    def __init__(self, hidden: int, vector_channels: int, n_particles: int) -> None:
        super().__init__()
        self.edge_mlp = _mlp([2 * hidden + 2, hidden, hidden], final_activation=True)
        self.coord_mlp = _mlp([hidden, hidden, vector_channels], final_activation=False)
        self.velocity_gate = _mlp([hidden, hidden, 1], final_activation=False)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden], final_activation=False)
        # EGNN initialises the last coordinate layer tiny: large early position updates
        # make the squared distances of later layers explode
        nn.init.xavier_uniform_(self.coord_mlp[-1].weight, gain=1e-3)
        nn.init.zeros_(self.coord_mlp[-1].bias)
        self.hidden = hidden
        # vector inputs: v, gated v, C aggregated differences, x − centroid
        self.node_update: nn.Module = RelaxedScalarVectorLinear(
            scalars_in=hidden, vectors_in=vector_channels + 3, scalars_out=hidden, vectors_out=1
        )
        with torch.no_grad():
            # start as plain EGNN: new velocity = gated old velocity + aggregated differences,
            # no scalar increment
            eq = self.node_update.equivariant
            eq.scalar_weight.zero_()
            eq.vector_weight.zero_()
            eq.vector_weight[0, 1 : vector_channels + 2] = 1.0
        self.register_buffer("neighbours", 1.0 - torch.eye(n_particles), persistent=False)
        self.inv_degree = 1.0 / (n_particles - 1)

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor, qq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = h.shape[1]
        diff = x.unsqueeze(2) - x.unsqueeze(1)  # (B, N, N, 3): x_i − x_j
        dist2 = diff.pow(2).sum(-1, keepdim=True)
        h_i = h.unsqueeze(2).expand(-1, -1, n, -1)
        h_j = h.unsqueeze(1).expand(-1, n, -1, -1)
        mask = self.neighbours.unsqueeze(-1)
        messages = self.edge_mlp(torch.cat([h_i, h_j, dist2, qq], dim=-1)) * mask

        weights = self.coord_mlp(messages) * mask  # (B, N, N, C)
        aggregated = torch.einsum("bijc,bijd->bicd", weights, diff) * self.inv_degree
        gated = self.velocity_gate(h).unsqueeze(-1) * v.unsqueeze(2)  # (B, N, 1, 3)
        centred = x - x.mean(dim=1, keepdim=True)  # translation-invariant, unlike x
        vectors = torch.cat([v.unsqueeze(2), gated, aggregated, centred.unsqueeze(2)], dim=2)
        features = torch.cat([h, vectors.flatten(2)], dim=-1)  # (B, N, hidden + 3(C+3))
        update = self.node_update(features)
        v = update[..., self.hidden :]
        x = x + v

        pooled = messages.sum(2) * self.inv_degree
        h = h + self.node_mlp(torch.cat([h, pooled], dim=-1)) + update[..., : self.hidden]
        return h, x, v


class NBodyEGNN(nn.Module):
    """Predicts positions at a later frame from ``(positions, velocities, charges)``.

    Inputs are ``(B, N, 3)``, ``(B, N, 3)``, ``(B, N, 1)``; the output is ``(B, N, 3)``:
    the input positions plus the sum of the per-layer updates.
    """

    def __init__(
        self, hidden: int = 64, layers: int = 4, vector_channels: int = 4, n_particles: int = 5
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1 or vector_channels < 1 or n_particles < 2:
            raise ValueError(
                "nbody model: hidden, layers, vector_channels must be >= 1 and n_particles >= 2"
            )
        self.hidden = hidden
        self.n_particles = n_particles
        # node scalars: charge and speed (both E(3)-invariant)
        self.embed = nn.Linear(2, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, vector_channels, n_particles) for _ in range(layers)
        )

    def forward(
        self, positions: torch.Tensor, velocities: torch.Tensor, charges: torch.Tensor
    ) -> torch.Tensor:
        speed = velocities.norm(dim=-1, keepdim=True)
        h = self.embed(torch.cat([charges, speed], dim=-1))
        qq = charges.unsqueeze(2) * charges.unsqueeze(1)  # (B, N, N, 1): q_i q_j
        x, v = positions, velocities
        for layer in self.layers:
            h, x, v = layer(h, x, v, qq)
        return x

    def export(self) -> nn.Module:
        """A plain-torch copy in eval mode computing the same function
        (:func:`workers.relax.export_module`; the model is not modified).

        Only defined once the model is projected (no relaxed layer left, see
        :func:`workers.relax.project_model`): a relaxed layer's free term is not
        equivariant, so exporting it would silently ship a non-equivariant model.
        """
        return export_module(self)


#: module types the exported model may contain (checked when the model is built)
EXPORTABLE_MODULES = (
    nn.Linear,
    nn.SiLU,
    nn.Sequential,
    nn.ModuleList,
    ScalarVectorLinear,
    EGNNLayer,
    NBodyEGNN,
)
