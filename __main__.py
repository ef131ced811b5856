"""gemma-stack: read and validate the stack config, build the stack, export its outputs."""

import pulumi

from stacks.config import load_stack_config
from stacks.stack import build_stack

for name, value in build_stack(load_stack_config()).items():
    pulumi.export(name, value)
