"""Input data: TFDS and image-folder sources and their tf.data pipelines.

  pipeline    the Source a run trains on (TFDS catalog or image folder), sharding, augmentation
  folders     image folders (split/label/*.png|jpg): scanning, checking, decoding
  image_files image files read in Python: opened locally or from gs://, headers, a bad file named
  prepared    an image folder converted once into a prepared, sharded TFDS dataset
  synthetic   learnable synthetic data, written in TFDS and image-folder form

May import: trainer.storage.api, trainer.config, trainer.errors.
"""
