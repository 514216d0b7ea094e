"""FLOPs per image of the composed AMNet with views made of the map (one trunk pass) or of the
image alone, with and without ResMem's head: torch.utils.flop_counter, batch 1.

    python benchmarks/flops_views.py
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

from amnet.builders import build_descriptor, build_resmem_head
from amnet.model.amnet import AMNet, AMNetEnsemble, model_views
from amnet.model.head import AMNetConfig, AMNetHead
from amnet.model.prior import KernelPrior
from amnet.trunks.registry import create_trunk

cfg = AMNetConfig(
    in_channels=1024, reduce_dim=64, proj_dim=128, att_dim=64, hidden_size=128, fc_dim=64
)
heads = [AMNetHead(cfg).eval() for _ in range(3)]
trunk = create_trunk("resnet152")
d = build_descriptor("resnet152")
x = torch.rand(1, 3, 224, 224)
for views in [("orig", "flip", "crop4", "crop9"), ("orig", "flip")]:
    for base in [None, build_resmem_head()]:
        prior = KernelPrior(d, 9192, 2000, "laplace", None, views, base)
        ens = AMNetEnsemble(heads, prior, 0.8, "features").eval()
        m = AMNet(trunk, ens, model_views(ens, True))
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            m(x)
        print(views, base is not None, f"{fc.get_total_flops() / 1e9:.2f} GFLOP")
ens = AMNetEnsemble(
    heads, KernelPrior(d, 9192, 2000, "laplace", None, ("orig",)), 0.8, "image"
).eval()
with FlopCounterMode(display=False) as fc, torch.inference_mode():
    AMNet(trunk, ens, ("orig",))(x)
print("orig only image", f"{fc.get_total_flops() / 1e9:.2f}")
