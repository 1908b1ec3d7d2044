"""Clean (non-adversarial) training for test fixtures: a few seeded epochs, enough for a model
whose loss an attack can meaningfully raise, in about a second."""

import torch


def train_clean(model, x, y, lam_of, epochs: int = 4, batch: int = 64, lr: float = 0.1):
    """SGD on ``(x, y)`` in seeded shuffled batches; ``lam_of(n)`` gives the λ of a batch of n.
    Returns the model in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = torch.nn.functional.cross_entropy(model(x[idx], lam_of(len(idx))), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
