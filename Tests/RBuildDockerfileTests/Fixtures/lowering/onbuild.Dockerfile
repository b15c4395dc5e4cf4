FROM scratch AS base
ONBUILD COPY trigger.txt /trigger.txt
ONBUILD RUN echo triggered
FROM base
RUN echo after
