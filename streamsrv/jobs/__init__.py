"""Clip analysis jobs and single-image detection on the live inference loop, at lower priority than the cameras.

- ``manager``: ``JobManager``, the bounded queue, its workers, limits and each job's life cycle.
- ``run``: ``JobRun``, one job over its clip: frames through a tracked background lane, progress, records.
- ``records``: the frame, event and summary records ``streamsrv analyze`` writes and a job returns.
- ``store``: the job model, results bounded in bytes and by age, and jobs kept in Redis for a restart.
- ``sources``: where a job may read (checked URLs and paths) and the spool of uploaded clips.
- ``images``: ``ImageLane``, single images (``POST /api/detect``) through one shared untracked lane.
- ``shared``: ``SharedInference``, what all of these need of the server: open a lane, know the model is loaded.
"""
