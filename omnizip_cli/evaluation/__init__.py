"""Measuring runs over many settings: ``omnizip profile`` (one clip, timing) and ``omnizip evaluate``
(accuracy of the full model vs OmniZip settings over a dataset).

Modules (none imports torch, transformers or Ray at import time):

* :mod:`.profile`: the full path against compression settings on one clip, warm-up and repeats;
* :mod:`.protocol`: :class:`Setting`, :class:`Prediction`, and the :class:`VideoAnswerer` /
  :class:`OpenVideo` protocol the model side implements (:mod:`.session_answerer`: on a Session);
* :mod:`.datasets`: the generic manifest and the Video-MME, WorldSense and AVUT readers;
* :mod:`.scoring`: the prompt, the letter extraction rule and open-answer matching;
* :mod:`.results`: the results folder (config, predictions, resume) and the metrics;
* :mod:`.jobs`: one video's pending (item, setting) pairs and answering them (:func:`answer_job`);
* :mod:`.runner`: the loop (:func:`run_evaluation`), single process or on Ray (:mod:`.ray_runner`);
* :mod:`.summary`: the Rich table and the chart; :mod:`.fake`: a deterministic fake answerer.
"""
