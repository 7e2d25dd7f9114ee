#!/bin/sh
# Publishes the sample clip, looped forever at its own frame rate, to one camera-sim path (run by mediamtx).
#   publish.sh RTSP_URL       the clip is $SAMPLE_CLIP (set in docker-compose.yml)
# -c copy sends the clip's H.264 as it is: no re-encoding, so a simulated camera costs almost no CPU.
set -eu

url=$1
clip=${SAMPLE_CLIP:?SAMPLE_CLIP is not set}
if [ ! -f "$clip" ]; then
  echo "camera-sim: sample clip $clip not found. Mount a directory holding it at /media: set STREAMSRV_MEDIA_DIR" \
    "(default ../shared/media) and STREAMSRV_SAMPLE_CLIP (default concourse_720p.mp4) for docker compose." >&2
  exit 1
fi
exec ffmpeg -hide_banner -loglevel warning -re -stream_loop -1 -i "$clip" -an -c:v copy \
  -f rtsp -rtsp_transport tcp "$url"
