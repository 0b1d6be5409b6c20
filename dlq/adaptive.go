package dlq

// AdaptiveBatch sizes replay batches (Baldur §5.6): start at 50 within
// 10..100; a batch failing at 20 % or more shrinks the next to 80 %; three
// perfect batches in a row grow it by 5; a partial success resets the
// streak.
type AdaptiveBatch struct {
	Size, Min, Max int
	streak         int
}

// NewAdaptiveBatch returns Baldur's defaults, capped at max items.
func NewAdaptiveBatch(maxItems int) *AdaptiveBatch {
	a := &AdaptiveBatch{Size: 50, Min: 10, Max: 100}
	if maxItems > 0 && maxItems < a.Size {
		a.Size = maxItems
	}
	return a
}

// Observe records a batch's outcome and returns the next size.
func (a *AdaptiveBatch) Observe(total, failed int) int {
	if total <= 0 {
		return a.Size
	}
	switch rate := float64(failed) / float64(total); {
	case rate >= 0.2:
		a.Size = max(a.Min, int(float64(a.Size)*0.8))
		a.streak = 0
	case failed == 0:
		a.streak++
		if a.streak == 3 {
			a.Size = min(a.Max, a.Size+5)
			a.streak = 0
		}
	default:
		a.streak = 0
	}
	return a.Size
}
