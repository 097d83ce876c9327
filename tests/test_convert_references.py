"""convert_model replaces registered submodules; a torch conv the model also holds in a plain
attribute (a list, tuple, dict or set, or a bound method of it) stays torch's, and a forward through
it runs torch's conv with parameters a later load_state_dict(assign=True) does not reach. That is
said in the report, with where the reference is, never left for a different answer to show it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import triton_conv
from triton_conv.launchers.common import launch_counts

from .reference import rel_error


class Held(nn.Module):
    """Two registered convs, also reached through a plain attribute made by `hold`."""

    def __init__(self, hold):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
        self.head = nn.Conv2d(4, 2, 1, dtype=torch.float64)
        self.plain = hold(self.stem, self.head)

    def forward(self, x):
        return self.head(self.stem(x))


HOLDERS = {
    "list": (lambda a, b: [a, b], ["plain[0]", "plain[1]"]),
    "tuple": (lambda a, b: (a, b), ["plain[0]", "plain[1]"]),
    "dict": (lambda a, b: {"first": a, "last": b}, ["plain['first']", "plain['last']"]),
    "nested": (lambda a, b: {"stages": [[a], (b,)]}, ["plain['stages'][0][0]", "plain['stages'][1][0]"]),
    "bound_method": (lambda a, b: a.forward, ["plain"]),
}


@pytest.mark.parametrize("holder", sorted(HOLDERS))
def test_a_plain_reference_to_a_converted_conv_is_reported_where_it_is(holder):
    hold, paths = HOLDERS[holder]
    model, report = Held(hold), []
    triton_conv.convert_model(model, report=report)
    assert [path for path, _ in report] == paths
    assert all("plain attribute" in reason and "nn.ModuleList" in reason for _, reason in report)
    assert "converted as 'stem'" in report[0][1]
    assert type(model.stem) is triton_conv.Conv2d and type(model.head) is triton_conv.Conv2d


def test_without_a_report_list_the_references_are_said_in_the_warning():
    with pytest.warns(UserWarning, match=r"plain\[0\]: holds the torch module converted as 'stem'"):
        triton_conv.convert_model(Held(lambda a, b: [a]))


def test_a_container_that_holds_itself_is_searched_once():
    loop: list = []
    loop.append(loop)
    model = Held(lambda a, b: loop)
    loop.append(model.stem)
    report = []
    triton_conv.convert_model(model, report=report)
    assert [path for path, _ in report] == ["plain[1]"]


class Listed(nn.Module):
    """The same network with its convs in an nn.ModuleList: registered, so converted everywhere."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64), nn.Conv2d(4, 2, 1, dtype=torch.float64)]
        )
        self.order = nn.ModuleList(list(self.layers))  # the same modules under a second name

    def forward(self, x):
        for layer in self.order:
            x = layer(x)
        return x


def test_registered_containers_are_converted_and_follow_assigned_parameters():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    state = {name: torch.randn_like(value) for name, value in Listed().state_dict().items()}
    expected = Listed()
    expected.load_state_dict(state, assign=True)
    model, report = Listed(), []
    triton_conv.convert_model(model, report=report)
    assert report == []
    model.load_state_dict(state, assign=True)
    before = sum(launch_counts.values())
    got = model(x)
    assert sum(launch_counts.values()) == before + 2, "both convs ran on the Triton kernels"
    assert rel_error(got, expected(x)) < 1e-12
