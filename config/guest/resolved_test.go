package guest

import "testing"

func TestIDMapHostIDs(t *testing.T) {
	m := &IDMap{
		UIDs: []IDRange{{Inside: 0, Outside: 100000, Count: 1000}, {Inside: 1000, Outside: 1000, Count: 1}},
		GIDs: []IDRange{{Inside: 0, Outside: 200000, Count: 10}},
	}
	for _, tt := range []struct{ uid, wantUID, gid, wantGID int }{
		{0, 100000, 0, 200000},
		{999, 100999, 9, 200009},
		{1000, 1000, 10, -1},
		{1001, -1, -1, -1},
	} {
		if got := m.HostUID(tt.uid); got != tt.wantUID {
			t.Errorf("HostUID(%d) = %d, want %d", tt.uid, got, tt.wantUID)
		}
		if got := m.HostGID(tt.gid); got != tt.wantGID {
			t.Errorf("HostGID(%d) = %d, want %d", tt.gid, got, tt.wantGID)
		}
	}
}
