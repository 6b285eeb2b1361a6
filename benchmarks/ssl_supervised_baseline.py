"""
The labels-only baseline for the semi-supervised table: the classifier network of M2's guide,
q(y | x) (same architecture), trained by cross-entropy on the labelled images alone (binarized
afresh each step), for as many steps as the semi-supervised runs take, then the test error of the
last step. Same label seeds, labelled images and optimiser (Adam, lr 3e-4) as ``ssl_runs.sh``.

    PYRO_SEQ_DATA=../shared/data python benchmarks/ssl_supervised_baseline.py dynamic_mnist --steps 4990
    python benchmarks/ssl_supervised_baseline.py digits --steps 3300 --hidden 100
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from pyro_seq.data import load_semi_supervised
from pyro_seq.nn import MultiInputMLP


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", choices=("digits", "dynamic_mnist", "binarized_mnist"))
    parser.add_argument("--steps", type=int, default=4990)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    errors = []
    for seed in args.seeds:
        data = load_semi_supervised(args.data, 10, seed)
        train = data.train
        torch.manual_seed(seed)
        net = MultiInputMLP((train.x.shape[-1],), (args.hidden, args.hidden), train.num_classes)
        optim = torch.optim.Adam(net.parameters(), lr=args.lr)
        x_l = train.x[torch.as_tensor(train.labelled)]
        g = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for _ in range(args.steps):
            x = (torch.rand(x_l.shape, generator=g) < x_l).float() if train.dynamic else x_l
            optim.zero_grad()
            F.cross_entropy(net(x), train.y_labelled).backward()
            optim.step()
        x_test, y_test = map(torch.as_tensor, data.test)
        with torch.no_grad():
            error = 100.0 * float((net(x_test).argmax(-1) != y_test).float().mean())
        errors.append(error)
        print(json.dumps({"data": args.data, "seed": seed, "steps": args.steps, "test_error": error,
                          "seconds": time.perf_counter() - start}), flush=True)
    print(f"labels only, {args.data}: test error {statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}% "
          f"({' / '.join(f'{e:.2f}' for e in errors)})")


if __name__ == "__main__":
    main()
