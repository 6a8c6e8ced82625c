#!/usr/bin/env bash
# The paper-setting testbed model for the few-step solver benchmarks (issue 24): IR-SDE's
# denoising setting, trained with examples/train_mr_diffusion.py. Not the shipped default.
#
#   max_sigma 50/255, epsilon prediction, T = 100, cosine thetas (eps 0.005): IR-SDE's
#   denoising configuration, where noise-parameterised solvers collapse at few steps;
#   data: the training photographs (`python examples/fetch_training_photos.py` first;
#   --train_data photos) with Gaussian noise of std exactly 25/255 (--kinds noise
#   --no_randomize_degradations), validated on the held-out photos at 25/255;
#   network: IR-SDE's U-Net at the shipped size (nf 16, depth 3, 2.2 M parameters, about
#   9 MB of float32 safetensors);
#   objective: MSE on epsilon (--loss_space target), the score every ODE/SDE solver
#   integrates (IR-SDE itself uses an L1 loss on the reverse-step mean); t drawn on the
#   continuous interval (0, T] because the solvers evaluate the network between the
#   integer times;
#   budget: 150 minutes of wall clock in all, over resumes (--max_minutes), on the CPU with
#   2 threads; a checkpoint every 10 minutes, the newest 3 kept.
#
# Resumable: the same command continues from the newest checkpoint in OUT/checkpoints
# (--resume latest starts fresh when there is none). At the end OUT/pipeline is the model
# (EMA weights, safetensors). The finished run is shipped in benchmarks/testbed_model (with
# its model card); the benchmark of the solvers on it:
#
#   python benchmarks/nfe_quality.py --model benchmarks/testbed_model --kinds noise \
#       --crop 64 --draws 2 --nfes 2,3,4,5,6,8,10,20,100 --ode-reference-nfe 500 \
#       --methods 'mrs-ode-*,unipc-bh*,unipc-noise-bh*,unipc-exact-bh2-*,unipc-exact-noise-bh2-*,posterior-irsde,x0-estimate' \
#       --threads 1 --out benchmarks/results/testbed
#
# Usage: examples/train_paper_testbed.sh [OUT] [extra train_mr_diffusion.py flags...]
# (default OUT: runs/testbed-irsde-denoise; extra flags override the ones below).
set -euo pipefail
out="${1:-runs/testbed-irsde-denoise}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$here/train_mr_diffusion.py" \
    --output_dir "$out" \
    --train_data photos --kinds noise --no_randomize_degradations --validation_kinds noise \
    --max_sigma 0.19607843137254902 --prediction_type epsilon \
    --num_train_timesteps 100 --theta_schedule cosine --eps 0.005 \
    --loss_space target --loss_type mse --timestep_sampling continuous \
    --architecture unet --nf 16 --depth 3 \
    --patch_size 64 --train_batch_size 8 --learning_rate 3e-4 \
    --lr_scheduler cosine --lr_warmup_steps 100 \
    --max_train_steps 1000000 --max_minutes 150 \
    --checkpointing_steps 1000000 --checkpointing_minutes 10 --checkpoints_total_limit 3 \
    --validation_steps 1000000 --validation_minutes 30 --validation_crop 128 \
    --cpu --num_threads 2 --seed 0 \
    --resume latest \
    "$@"
