#!/usr/bin/env python
"""Train an MR diffusion (IR-SDE) restoration model with accelerate.

A thin wrapper around :func:`diffusers_mrs.training.train`; every flag is a field of
:class:`diffusers_mrs.training.TrainingConfig` (``--help`` lists them with their defaults).

Examples::

    # the bundled photos, all four degradations, on this machine (CPU or one GPU)
    python examples/train_mr_diffusion.py --output_dir runs/mr --max_train_steps 20000

    # several processes / GPUs, mixed precision, gradient accumulation
    accelerate launch --num_processes 2 examples/train_mr_diffusion.py \\
        --output_dir runs/mr --mixed_precision bf16 --gradient_accumulation_steps 2

    # the real photographs of examples/fetch_training_photos.py, realistic degradations
    python examples/train_mr_diffusion.py --train_data photos --kinds noise lowlight clean \
        --validation_kinds noise lowlight clean --output_dir runs/photos

    # an IR-SDE paired folder (ROOT/LQ/*.png, ROOT/GT/*.png)
    python examples/train_mr_diffusion.py --train_data /data/deraining/train --output_dir runs/rain

    # Refusion's NAFNet instead of the U-Net (its size in --unet_kwargs)
    python examples/train_mr_diffusion.py --output_dir runs/naf --architecture nafnet \
        --unet_kwargs '{"width": 16, "enc_blk_nums": [1, 1, 1, 1]}'

    # continue the last checkpoint of a run
    python examples/train_mr_diffusion.py --output_dir runs/mr --resume latest

The result, ``OUTPUT_DIR/pipeline``, loads with ``MRRestorationPipeline.from_pretrained``.
"""

import os

# On a shared CPU, OpenMP threads that spin while waiting make every step several times
# slower when other processes compete for the cores; must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diffusers_mrs.training import main

if __name__ == "__main__":
    main()
