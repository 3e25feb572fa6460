// AudioWorklet that records its input's first channel, posting 100 ms blocks to the page with
// the context frame of their first sample (the same clock as the page's AudioBufferSourceNode).
class QualityRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(4800);
    this.fill = 0;
    this.start = null;
    this.stopped = false;
    this.port.onmessage = (e) => {
      if (e.data === 'stop') this.stopped = true;
    };
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    const n = 128;
    const ch = input && input.length ? input[0] : null;
    for (let i = 0; i < n; i++) {
      if (this.fill === 0) this.start = currentFrame + i;
      this.block[this.fill++] = ch ? ch[i] : 0;
      if (this.fill === this.block.length) {
        this.port.postMessage({ frame: this.start, data: this.block }, [this.block.buffer]);
        this.block = new Float32Array(4800);
        this.fill = 0;
      }
    }
    return true;
  }
}
registerProcessor('quality-recorder', QualityRecorder);
