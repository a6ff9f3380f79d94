"""tfx-lm: a TFX pipeline that trains and serves transformer language models."""

import setuptools

# The stack, pinned once. requirements.lock pins every transitive package on top of these;
# every install path (venv, root filesystem, Docker image) installs from the lock.
STACK = [
  'tfx==1.21.0',
  'tensorflow==2.21.0',
  'tensorflow-text==2.21.1',
  'tensorflow-transform==1.21.0',
  'tensorflow-model-analysis==0.52.0',
  'tensorflow-data-validation==1.21.0',
  'apache-beam[gcp]==2.77.0',
  'keras==3.15.1',
  'keras-hub==0.32.0',
  'safetensors==0.8.0',  # keras-hub's Hugging Face converters read model.safetensors
  'tensorboard==2.21.0',
  'tensorflow-serving-api==2.19.1',
  'grpcio==1.85.3',
  'kfp==2.17.3',
  'kfp-pipeline-spec==2.17.3',
  'PyYAML==6.0.4',
]

DEV = [
  'pytest==9.2.0',
  'pytest-xdist==3.8.0',  # `make test` on every core (Makefile)
  'ruff==0.17.6',
  'scikit-learn==1.5.2',  # the demo's baseline (pipeline/baseline.py)
  'tokenizers==0.23.3',
]

setuptools.setup(
  name='tfx-lm',
  version='0.1.0',
  description='TFX pipeline for training and serving transformer language models',
  long_description=open('README.md', encoding='utf-8').read(),
  long_description_content_type='text/markdown',
  license='Apache-2.0',
  python_requires='>=3.10,<3.14',
  packages=setuptools.find_packages(
    include=['pipeline*', 'components*', 'trainer*', 'serving*', 'tfxlm*']
  ),
  package_data={'pipeline': ['configs/*.yaml']},
  install_requires=STACK,
  extras_require={'dev': DEV},
  entry_points={'console_scripts': ['tfx-lm-serve=serving.__main__:main']},
  classifiers=[
    'Programming Language :: Python :: 3 :: Only',
    'Programming Language :: Python :: 3.10',
    'Programming Language :: Python :: 3.11',
    'Programming Language :: Python :: 3.12',
    'Programming Language :: Python :: 3.13',
    'Topic :: Scientific/Engineering :: Artificial Intelligence',
  ],
)
