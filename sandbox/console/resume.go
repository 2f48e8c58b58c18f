package console

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Resume is what the host tells the init of a machine restored from a
// template, on the run channel, before anything of the run is mounted.
// Every restore starts from one saved state: the guest's clock stopped when
// the template was saved, and its random number generator would repeat
// itself run after run, so the host sends its time and fresh entropy.
type Resume struct {
	Time    time.Time
	Entropy [32]byte
}

// The run channel's protocol: the init writes ReadyByte until the host's
// resume message arrives; the host building a template saves the machine
// once it has read one, and the host of a run writes the message after the
// restore. The message is resumeMagic, the time as big-endian u64
// nanoseconds since the epoch, and the entropy.
const (
	ReadyByte   = 'R'
	resumeMagic = "VSRESUME"
	resumeSize  = len(resumeMagic) + 8 + 32
)

func (m Resume) encode() []byte {
	b := append([]byte(resumeMagic), binary.BigEndian.AppendUint64(nil, uint64(m.Time.UnixNano()))...)
	return append(b, m.Entropy[:]...)
}

// SendResume writes the resume message to the run channel.
func SendResume(conn io.Writer, m Resume) error {
	_, err := conn.Write(m.encode())
	return err
}

// AwaitReady reads the run channel until the init says it is ready to be
// saved.
func AwaitReady(conn io.Reader) error {
	b := make([]byte, 64)
	for {
		n, err := conn.Read(b)
		if bytes.IndexByte(b[:n], ReadyByte) >= 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("console: waiting for the template's init: %w", err)
		}
	}
}

// ResumeSize is the length of the resume message.
const ResumeSize = resumeSize

// DecodeResume reads the resume message the init received.
func DecodeResume(b []byte) (Resume, error) {
	if len(b) != resumeSize || string(b[:len(resumeMagic)]) != resumeMagic {
		return Resume{}, fmt.Errorf("%w: not a resume message: %q", ErrFrame, b)
	}
	m := Resume{Time: time.Unix(0, int64(binary.BigEndian.Uint64(b[len(resumeMagic):])))}
	copy(m.Entropy[:], b[len(resumeMagic)+8:])
	return m, nil
}
